"""The ``aicd`` command line.

Each sub-command is a small function taking the parsed arguments; every
:class:`AicdError` becomes one clear message on stderr and a non-zero exit.
"""

import argparse
import logging
import sys
from collections.abc import Callable

from aicd.components.errors import AicdError

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


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from aicd.pipelines.demo import run_demo

    return run_demo(args.spec, workdir=args.workdir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aicd", description="Continuous delivery for AI models on Kubeflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check spec files; print every problem")
    p.add_argument("specs", nargs="+", metavar="SPEC")

    p = sub.add_parser("demo", help="run the main job locally on the offline default")
    p.add_argument("--spec", default="examples/support-bot/spec.yaml")
    p.add_argument("--workdir", default=".aicd/demo", help="where artifacts go")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
