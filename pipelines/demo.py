"""``make demo``: the main job, locally, on the offline default.

finetune pipeline under kfp.local (ingest -> train an adapter -> evaluate against the
base -> gate -> promote into a local bare GitOps repository), then the predictor on
127.0.0.1 serving the promoted adapter, asked through the official OpenAI client,
then a summary. Whatever part cannot run says so and the demo exits non-zero: it
never reports success it did not have.
"""

import logging
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from aicd.components.spec import Spec, load_spec

log = logging.getLogger(__name__)
ALREADY_SERVING = "already serving"  # the gate found the candidate to be the serving champion (its files)
ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "examples" / "profiles" / "local.yaml"
# What `make demo` trims from the example spec to finish within 10 minutes on 2 CPU cores
# (SmolLM2-135M: about 2 s of CPU per packed 256-token training step here). Printed when applied.
DEMO_BUDGET = {"training": {"max_steps": 24, "batch_size": 4, "checkpoint": {"every_steps": 12}},
               "task": {"max_length": 96},
               "metrics": {"max_examples": 24, "max_new_tokens": 24}}
# Torch threads of each step (kfp.local runs one step at a time, each in a subprocess that inherits
# this). Two threads on 2 cores spin-wait whenever anything else runs: measured on a shared 2-core
# machine, the same demo took 10.6 min and 559 s CPU with 2 threads, 4.4 min and 185 s CPU with 1
# (benchmarks/results/demo-profile.md). An OMP_NUM_THREADS already set is kept.
DEMO_THREADS = "1"


def demo_threads(environ: dict[str, str] | None = None) -> str:
    """Set OMP_NUM_THREADS for the demo's steps unless the caller set it; the value in force."""
    environ = os.environ if environ is None else environ
    return environ.setdefault("OMP_NUM_THREADS", DEMO_THREADS)


def apply_budget(spec: Spec, budget: dict[str, Any]) -> tuple[Spec, list[str]]:
    """The spec with the budget's smaller values (never larger ones); the changes as lines."""
    from aicd.components.spec import parse_spec

    data = spec.model_dump(mode="json", exclude_none=True)
    changes: list[str] = []

    def merge(target: dict, patch: dict, where: str) -> None:
        for key, value in patch.items():
            if isinstance(value, dict):
                merge(target.setdefault(key, {}), value, f"{where}{key}.")
            elif target.get(key) is None or value < target[key]:
                changes.append(f"{where}{key}: {target.get(key)} -> {value}")
                target[key] = value

    merge(data, budget, "")
    return parse_spec(data, "demo budget"), changes


def probe_base_model(spec: Spec, console: Console) -> list[tuple[str, str]]:
    """Answer the probe prompts with the base model in this process (no adapter, no server)."""
    import torch

    from aicd.components.models import format_prompt, load_causal_lm

    candidate = spec.candidate()
    model, tokenizer, _ = load_causal_lm(candidate.uri, digest=candidate.digest)
    torch.manual_seed(spec.metrics.seed)
    answers = []
    for question in spec.metrics.probe_prompts or ["Hello, who are you?"]:
        prompt = format_prompt(tokenizer, question, candidate.prompt_template or spec.task.prompt_template,
                               spec.task.system_prompt)
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=spec.metrics.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        console.print(f"  Q: {question}\n  A (base model, in process): {answer}")
        answers.append((question, answer))
    return answers


def _run_pipeline(spec: Spec, workdir: Path, console: Console):
    from aicd.pipelines.local import run_local
    from aicd.pipelines.platform import Platform
    from aicd.pipelines.profiles import load_profile
    from aicd.pipelines.progress import StepPrinter, render_summary, write_summary
    from aicd.pipelines.stages import build_pipeline, pipeline_arguments

    pipeline = build_pipeline("finetune", Platform(load_profile(PROFILE), on_cluster=False))
    console.rule("finetune pipeline (kfp.local)")
    run = run_local(pipeline, pipeline_arguments(spec), workdir, listener=StepPrinter(console))
    render_summary(run, console)
    write_summary(run, run.root / "summary.json")
    return run


def _serve_and_ask(spec: Spec, adapter: Path, workdir: Path, console: Console) -> list[tuple[str, str]]:
    from aicd.pipelines.services import ask, running_predictor

    console.rule("serving the adapter (127.0.0.1) and asking through the OpenAI client")
    name = spec.delivery.serving.name
    answers = []
    with running_predictor(spec.candidate().uri, {name: str(adapter)}, workdir / "serving") as predictor:
        console.print(f"predictor ready at {predictor.url} (pid {predictor.pid}, log {predictor.log_file})")
        for question in spec.metrics.probe_prompts or ["Hello, who are you?"]:
            answer = ask(predictor, name, question, spec.metrics.max_new_tokens, spec.task.system_prompt)
            console.print(f"  Q: {question}\n  A ({name} adapter via {predictor.openai_base}): {answer}")
            answers.append((question, answer))
    return answers


def _ensure_gitops(spec: Spec, console: Console) -> None:
    from aicd.pipelines.gitops import ensure_gitops_repo

    gitops = spec.delivery.gitops
    if "://" in gitops.repo or ":" in gitops.repo.split("/")[0]:
        return  # a remote repository: it exists already
    if ensure_gitops_repo(gitops.repo, gitops.branch, ROOT / "manifests"):
        console.print(f"created the local GitOps repository {gitops.repo} (branch {gitops.branch}) from manifests/")


def _model_name(model: dict[str, Any] | None) -> str:
    if not model:
        return "none"
    if model.get("digest"):
        return f"{model.get('name') or 'model'} {str(model['digest']).split(':')[-1][:12]}"
    return f"{model.get('name') or model.get('uri')} (base model)"


def _outcome(run, spec: Spec) -> dict[str, Any]:
    """What the finetune run decided, from the gate's blessing: the candidate against the champion it
    was compared with (the serving one, or the base model while none serves), and the promotion."""
    from aicd.components.delivery.gate import read_json

    out: dict[str, Any] = {}
    primary = spec.metrics.primary
    for task in run.tasks:
        if task.name.startswith("choose-method"):
            out["method chosen"] = task.outputs.get("chosen")
        elif task.name.startswith("gate-candidate") and task.outputs.get("blessing") is not None:
            blessing = read_json(task.outputs["blessing"].path, "blessing")
            summary, comparison = blessing.get("summary") or {}, (blessing.get("summary") or {}).get("comparison")
            out[f"candidate {primary}"] = f"{_num(summary.get('candidate'))} ({_model_name(blessing.get('candidate'))})"
            if comparison:
                out[f"champion {primary}"] = f"{_num(comparison.get('champion'))} " \
                                              f"({_model_name(blessing.get('champion'))})"
                low, high = _num(comparison.get("low"), "+.3f"), _num(comparison.get("high"), "+.3f")
                out["difference"] = f"{_num(comparison.get('diff'), '+.4f')} (95% CI [{low}, {high}])"
            serving = blessing.get("already_serving")
            out["gate"] = ("passed" if task.outputs.get("Output") else
                           f"{ALREADY_SERVING} {serving}: nothing to promote" if serving else "FAILED")
            out["gate reasons"] = "; ".join(blessing.get("reasons", []))
        elif task.name.startswith("compare-models") and task.outputs.get("comparison") is not None:
            out.update(compared_metrics(read_json(task.outputs["comparison"].path, "comparison"), spec))
            out["comparison report"] = str(Path(task.outputs["comparison"].path) / "comparison.html")
        elif task.name.startswith("promote-adapter"):
            out["promoted commit"] = task.outputs.get("Output") or "(no change)"
    return out


def compared_metrics(comparison: dict[str, Any], spec: Spec) -> dict[str, str]:
    """Every metric the paired comparison holds: candidate, champion, difference, interval and verdict,
    the gated ones marked (``[gate: superiority]``), so a significant loss is never left out."""
    from aicd.components.evaluation.comparison_report import verdict

    gates = spec.metrics.gates
    gated = {**{m: "non-inferiority" for m in gates.non_inferiority}, **{m: "superiority" for m in gates.superiority}}
    if gates.require_improvement:
        gated[spec.metrics.primary] = "superiority"
    level = f"{comparison.get('confidence', 0.95):.0%}"
    out = {}
    for metric, row in (comparison.get("metrics") or {}).items():
        if "/" in metric:
            continue  # per-class precision/recall live in the HTML report
        word = verdict(metric, row)
        mark = {"significantly better": "[green]+ significantly better[/]",
                "significantly worse": "[red]- significantly worse[/]"}.get(word, word)
        gate = f" \\[gate: {gated[metric]}]" if metric in gated else ""  # escaped: rich would eat "[gate: ...]"
        out[f"  {metric}"] = (f"{_num(row.get('candidate'))} vs {_num(row.get('champion'))}, diff "
                              f"{_num(row.get('diff'), '+.4f')} ({level} CI [{_num(row.get('low'), '+.3f')}, "
                              f"{_num(row.get('high'), '+.3f')}]) {mark}{gate}")
    return {"compared metrics (candidate vs champion)": "", **out} if out else {}


def _num(value: Any, fmt: str = ".4f") -> str:
    value = value.get("value") if isinstance(value, dict) else value
    return format(value, fmt) if isinstance(value, (int, float)) else "missing"


def _delivered_model(run) -> Path | None:
    """The Model artifact the run gated: the best method's copy (or a lone training step's output)."""
    for prefix, output in (("choose-method", "best"), ("train-adapter", "model")):
        task = next((t for t in run.tasks if t.name.startswith(prefix) and output in t.outputs), None)
        if task is not None:
            return Path(task.outputs[output].path)
    return None


def run_demo(spec_path: str, workdir: str = ".aicd/demo") -> int:
    from aicd.pipelines.stages import StepsMissing

    console = Console(highlight=False, soft_wrap=True)
    started = time.monotonic()
    work = Path(workdir).resolve()
    spec, changes = apply_budget(load_spec(spec_path), DEMO_BUDGET)
    spec = _own_checkpoints(spec, work / "checkpoints")
    work.mkdir(parents=True, exist_ok=True)
    console.print(f"spec {spec_path}: ok ({spec.name}, {spec.task.type}, base {spec.candidate().uri})")
    if changes:
        console.print("demo budget (10 minutes on 2 CPU cores): " + ", ".join(changes))
    console.print(f"torch threads per step: OMP_NUM_THREADS={demo_threads()}")
    missing: list[str] = []
    summary: dict[str, Any] = {}
    _ensure_gitops(spec, console)
    try:
        run = _run_pipeline(spec, work, console)
    except StepsMissing as err:
        missing.append(str(err))
        run = None
    if run is not None:
        summary["pipeline"] = f"{run.pipeline}: {len(run.tasks)} step(s) in {run.seconds:.0f}s, artifacts {run.root}"
        summary.update(_outcome(run, spec))
        adapter = _delivered_model(run)
        if adapter is None:
            missing.append("the finetune pipeline produced no adapter (train_adapter missing)")
        else:
            summary["adapter"] = str(adapter)
            if str(summary.get("gate", "")).startswith(ALREADY_SERVING):
                console.print(f"{summary['gate']}; serving the adapter to show what it answers")
            elif summary.get("gate") != "passed":
                console.print("[yellow]the gate did not pass the adapter: it was not promoted; serving it anyway "
                              "so you can see what it answers[/]")
            summary["gitops"] = _gitops_head(spec)
            answers = _serve_and_ask(spec, adapter, work, console)
            summary["answers"] = "; ".join(f"{q!r} -> {a!r}" for q, a in answers)
    if missing:
        console.rule("[red]demo incomplete")
        for line in missing:
            console.print(f"[red]missing:[/] {line}")
        console.print("what exists, for real: the base model answering the probe prompts")
        probe_base_model(spec, console)
    console.rule("summary")
    for key, value in summary.items():
        console.print(f"{key}: {value}")
    elapsed = time.monotonic() - started
    verdict, code = demo_verdict(summary, missing)
    console.print(f"demo {verdict} in {elapsed:.0f}s ({elapsed / 60:.1f} min)")
    return code


def demo_verdict(summary: dict[str, Any], missing: list[str]) -> tuple[str, int]:
    """The demo's last line and exit code: 0 when the adapter was promoted, or when it is the model that
    serves already (a second demo on the same workdir retrains the same files: nothing to promote)."""
    gate = str(summary.get("gate", ""))
    if missing:
        return "INCOMPLETE (see missing above)", 1
    if summary.get("promoted commit"):
        return "finished: the adapter was gated, promoted through Git and served", 0
    if gate.startswith(ALREADY_SERVING):
        return f"finished: {gate} (no new GitOps commit, no canary)", 0
    return "finished, but the gate rejected the adapter, so nothing was promoted (reasons above)", 1


def _own_checkpoints(spec: Spec, root: Path) -> Spec:
    """Keep the demo's training checkpoints in its workdir: removing the workdir starts it afresh."""
    from aicd.components.spec import parse_spec

    data = spec.model_dump(mode="json", exclude_none=True)
    data["training"].setdefault("checkpoint", {})["root"] = str(root)
    return parse_spec(data, "demo")


def _gitops_head(spec: Spec) -> str:
    from aicd.pipelines.gitops import head_commit

    gitops = spec.delivery.gitops
    sha, subject = head_commit(gitops.repo, gitops.branch)
    return f"{gitops.repo} {gitops.branch} at {sha[:12]}: {subject}"
