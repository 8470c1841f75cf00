"""The ``aicd`` command line.

Each sub-command is a small function taking the parsed arguments; every
:class:`AicdError` becomes one clear message on stderr and a non-zero exit:
0 ok, 1 a domain error (spec, data, a refused gate, delivery), 2 a usage error
(:class:`~aicd.components.errors.UsageError`, or argparse's own).
"""

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from aicd.components.errors import AicdError, UsageError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


@command("validate")
def cmd_validate(args: argparse.Namespace) -> int:
    from aicd.components.errors import SpecError
    from aicd.components.spec import load_spec

    failed = 0
    for path in args.specs:
        try:
            spec = load_spec(path)
        except SpecError as err:
            failed += 1
            print(err, file=sys.stderr)
            continue
        print(f"{path}: ok ({spec.name}: {spec.task.type}, {len(spec.candidates)} candidate(s), "
              f"{len(spec.training.methods)} training method(s))")
    return 1 if failed else 0


@command("schema")
def cmd_schema(args: argparse.Namespace) -> int:
    """Print the spec's JSON Schema (for editors), or docs/spec.md with --markdown."""
    import json

    from aicd.pipelines.specdoc import spec_markdown, spec_schema

    print(spec_markdown() if args.markdown else json.dumps(spec_schema(), indent=2), end="\n" * (not args.markdown))
    return 0


@command("compile")
def cmd_compile(args: argparse.Namespace) -> int:
    from aicd.pipelines.submit import set_image_environment

    set_image_environment(args.registry, args.tag)  # before any steps module is imported
    from aicd.pipelines.platform import Platform
    from aicd.pipelines.profiles import load_profile
    from aicd.pipelines.stages import PIPELINES, build_pipeline
    from aicd.pipelines.submit import compile_pipeline

    platform = Platform(load_profile(args.profile))
    names = args.pipelines or list(PIPELINES)
    for name in names:
        path = compile_pipeline(build_pipeline(name, platform), Path(args.out) / f"{name}.yaml")
        print(f"{name}: {path}")
    print(f"compiled {len(names)} pipeline(s) with profile {platform.profile.name}")
    return 0


def _pipeline_arguments(path: str) -> dict:
    """The spec validated once and split into the pipelines' per-section parameters."""
    from aicd.pipelines.stages import load_pipeline_arguments

    return load_pipeline_arguments(path)


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    if not args.local:
        raise UsageError(f"`aicd run {args.pipeline}` needs --local (this machine, kfp.local)",
                         f"add --local, or send it to a cluster with `aicd submit {args.pipeline} --host URL`")
    from aicd.components.spec import load_spec
    from aicd.pipelines.local import run_local
    from aicd.pipelines.platform import Platform
    from aicd.pipelines.preflight import preflight
    from aicd.pipelines.profiles import load_profile
    from aicd.pipelines.progress import StepPrinter, render_summary, write_summary
    from aicd.pipelines.stages import build_pipeline, pipeline_arguments

    spec = load_spec(args.spec)
    arguments = pipeline_arguments(spec)
    pipeline = build_pipeline(args.pipeline, Platform(load_profile(args.profile), on_cluster=False))
    if not args.skip_preflight:
        preflight(spec, args.pipeline)
    print(f"running {args.pipeline} locally on {args.spec} (workdir {args.workdir}, "
          f"cache {'off' if args.no_cache else 'on'})")
    per_step = spec.training.batch_size * spec.training.gradient_accumulation
    printer = StepPrinter(heartbeat_seconds=args.progress_seconds, total=_step_count(pipeline),
                          examples_per_step=per_step)
    try:
        run = run_local(pipeline, arguments, args.workdir, cache=not args.no_cache, listener=printer,
                        verbose=args.verbose, runner=args.runner)
    finally:
        printer.close()
    render_summary(run)
    print(f"summary: {write_summary(run, run.root / 'summary.json')}")
    return 0


def _step_count(pipeline) -> int:
    """The container tasks of a pipeline's graph (a loop's body counted once)."""
    spec = pipeline.pipeline_spec
    components = spec.components

    def count(dag) -> int:
        total = 0
        for task in dag.tasks.values():
            component = components[task.component_ref.name]
            total += count(component.dag) if component.WhichOneof("implementation") == "dag" else 1
        return total

    return count(spec.root.dag)


@command("init-gitops")
def cmd_init_gitops(args: argparse.Namespace) -> int:
    """Create a local bare GitOps repository seeded with the project's manifests/ (as the demo does)."""
    from aicd.pipelines.gitops import ensure_gitops_repo, head_commit
    from aicd.pipelines.preflight import default_manifests

    manifests = Path(args.manifests) if args.manifests else default_manifests()
    created = ensure_gitops_repo(args.path, args.branch, manifests)
    sha, subject = head_commit(args.path, args.branch)
    state = "created" if created else "exists already"
    print(f"GitOps repository {args.path} {state} (branch {args.branch} at {sha[:12]}: {subject}); "
          f"set `delivery.gitops.repo: {Path(args.path).resolve()}` in your spec")
    return 0


@command("submit")
def cmd_submit(args: argparse.Namespace) -> int:
    from aicd.pipelines.submit import set_image_environment

    set_image_environment(args.registry, args.tag)
    import tempfile

    from aicd.components.secrets import read_secret
    from aicd.pipelines.platform import Platform
    from aicd.pipelines.profiles import load_profile
    from aicd.pipelines.stages import build_pipeline
    from aicd.pipelines.submit import compile_pipeline, make_client, submit_pipeline

    arguments = _pipeline_arguments(args.spec)
    token = read_secret(args.token_secret) if args.token_secret else None
    profile = load_profile(args.profile)
    pipeline = build_pipeline(args.pipeline, Platform(profile))
    recurring = args.pipeline == "continuous" and not args.once
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(pipeline, Path(tmp) / f"{args.pipeline}.yaml")
        client = make_client(args.host, args.namespace, token)
        done = submit_pipeline(client, package, f"{arguments['name']}-{args.pipeline}", arguments,
                               experiment=args.experiment or arguments["name"], recurring=recurring,
                               schedule=args.schedule, namespace=args.namespace,
                               service_account=profile.service_account)
    print(f"submitted {done.kind} {done.name} ({done.id}) to {args.host}")
    return 0


@command("serve")
def cmd_serve(args: argparse.Namespace) -> int:
    from aicd.pipelines.services import serve

    return serve(args.serve_args)


@command("canary")
def cmd_canary(args: argparse.Namespace) -> int:
    from aicd.pipelines.services import canary

    return canary(args.spec, args.prometheus, args.max_intervals)


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from aicd.pipelines.demo import run_demo

    return run_demo(args.spec, workdir=args.workdir)


@command("digest")
def cmd_digest(args: argparse.Namespace) -> int:
    from aicd.components.provenance import digest_of, write_base_card

    print(write_base_card(args.path) if args.write_card else digest_of(args.path))
    return 0


def _platform_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None, help="platform profile YAML, e.g. examples/profiles/gpu-cluster.yaml")
    p.add_argument("--registry", default=None, help="image registry (sets AICD_IMAGE_REGISTRY)")
    p.add_argument("--tag", default=None, help="image tag (sets AICD_IMAGE_TAG)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aicd")
    except PackageNotFoundError:  # running from a source tree without an install
        return "unknown (not installed; pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aicd", description="Continuous delivery for AI models on Kubeflow.")
    parser.add_argument("--version", action="version", version=f"aicd {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check spec files; print every problem")
    p.add_argument("specs", nargs="+", metavar="SPEC")

    p = sub.add_parser("schema", help="print the spec's JSON Schema (for editors); --markdown: docs/spec.md")
    p.add_argument("--markdown", action="store_true", help="the reference page instead (docs/spec.md)")

    p = sub.add_parser("compile", help="write every pipeline (or the named ones) as KFP IR YAML")
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE", help="poc, scoping, finetune, redesign, continuous")
    p.add_argument("--out", default="build/pipelines", help="folder for <pipeline>.yaml")
    _platform_options(p)

    p = sub.add_parser("run", help="run a pipeline on this machine (kfp.local) with the content-hash cache")
    p.add_argument("pipeline", metavar="PIPELINE")
    p.add_argument("--local", action="store_true", help="run here with kfp.local (the only way `run` runs)")
    p.add_argument("--spec", default="examples/support-bot/spec.yaml")
    p.add_argument("--workdir", default=".aicd", help="runs/ (artifacts, logs) and cache/ go here")
    p.add_argument("--no-cache", action="store_true", help="run every step even if its inputs did not change")
    p.add_argument("--profile", default=None, help="platform profile YAML (default: the built-in local one)")
    p.add_argument("--skip-preflight", action="store_true",
                   help="do not check the GitOps repository, Label Studio and the URIs before the first step")
    p.add_argument("--progress-seconds", type=float, default=20.0,
                   help="print a progress line at least this often while steps run (default 20)")
    p.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                   help="subprocess: steps in this environment; docker: each step in its role image "
                        "(make images) through DOCKER_HOST, e.g. podman's socket")

    p = sub.add_parser("init-gitops", help="create a local GitOps repository seeded with the project's manifests/")
    p.add_argument("path", metavar="PATH", help="where the bare repository goes (the spec's delivery.gitops.repo)")
    p.add_argument("--branch", default="main", help="the branch to create (delivery.gitops.branch)")
    p.add_argument("--manifests", default=None, help="the kustomize tree to seed it with (default: manifests/)")

    p = sub.add_parser("submit", help="send a pipeline to Kubeflow Pipelines (continuous: a recurring run)")
    p.add_argument("pipeline", metavar="PIPELINE")
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    p.add_argument("--spec", required=True, help="the product's spec.yaml")
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace")
    p.add_argument("--experiment", default=None, help="default: the spec's name")
    p.add_argument("--schedule", default="0 0 */6 * * *", help="cron (with seconds) of the continuous run")
    p.add_argument("--once", action="store_true", help="continuous: one run instead of a recurring run")
    p.add_argument("--token-secret", default=None, help="Secret name holding a KFP bearer token (key `token`)")
    _platform_options(p)

    p = sub.add_parser("serve", help="start the predictor (python -m aicd.components.serving options follow)",
                       add_help=False)

    p = sub.add_parser("canary", help="step a canary up through Git, analysing Prometheus between steps")
    p.add_argument("--spec", required=True, help="the product's spec.yaml")
    p.add_argument("--prometheus", default=None, help="Prometheus URL (default: delivery.prometheus_url)")
    p.add_argument("--max-intervals", type=int, default=None, help="stop after this many analysis intervals")

    p = sub.add_parser("digest", help="print the digest that pins a model folder (candidates[].digest, "
                                      "--base-digest)")
    p.add_argument("path", metavar="PATH", help="a model folder or GGUF file on this machine")
    p.add_argument("--write-card", action="store_true",
                   help="instead, record the folder's files in a new card.json (kind base-model), so it loads "
                        "without a pin; only for files you trust as they are")

    p = sub.add_parser("demo", help="run the main job locally on the offline default")
    p.add_argument("--spec", default="examples/support-bot/spec.yaml")
    p.add_argument("--workdir", default=".aicd/demo", help="where artifacts go")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    serve_args: list[str] = []
    if command_at is not None and argv[command_at] == "serve":  # everything after `serve` is the predictor's
        argv, serve_args = argv[:command_at + 1], argv[command_at + 1:]
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        args.serve_args = serve_args
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return COMMANDS[args.command](args)
    except AicdError as err:
        print(f"aicd {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"aicd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
