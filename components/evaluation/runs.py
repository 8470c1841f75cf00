"""The evaluation steps as plain typed functions (steps.py only parses, calls these and publishes).

A Model artifact given to an evaluation is read once, by
:func:`aicd.components.contracts.read_model_ref`: a model with files, or a reference to a
base candidate in its leaderboard mode (few-shot examples included).
"""

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.contracts import read_model_ref
from aicd.components.spec import Spec


@dataclass(frozen=True)
class EvaluateResult:
    """An evaluation's report (as evaluate.py returns it) and where its HTML page is."""

    report: dict[str, Any]
    html: Path

    @property
    def metrics(self) -> dict[str, float]:
        return {k: v["value"] for k, v in self.report["metrics"].items()}

    def summary(self) -> str:
        """The JSON the step returns: the model's identity and every metric's value."""
        return json.dumps({"model": self.report["model"], "metrics": self.metrics})


def run_evaluate_model(spec: Spec, dataset_dir: str | Path, out_dir: str | Path, model_dir: str | Path | None = None,
                       candidate: str = "", endpoint: str = "", split: str = "",
                       light: bool = False) -> EvaluateResult:
    """Evaluate a Model artifact, a base candidate (no ``model_dir``, or a ``model_dir`` that only refers to
    one: then in the reference's mode) or a live ``endpoint``; reads task, candidates and metrics.
    ``light``: metrics only (see :func:`aicd.components.evaluation.evaluate.run_evaluation`)."""
    from aicd.components.evaluation.evaluate import evaluate_model
    from aicd.components.evaluation.leaderboard import evaluate_base

    ref = read_model_ref(model_dir, verify=False) if model_dir is not None else None
    if ref is not None and ref.is_base and ref.shot_examples:
        report = evaluate_base(spec, dataset_dir, out_dir, ref.candidate or candidate or None, ref.mode,
                               [list(s) for s in ref.shot_examples], split or None)
    else:
        if ref is not None and ref.is_base:
            model_dir, candidate = None, ref.candidate or candidate
        report = evaluate_model(spec, dataset_dir, out_dir, model=model_dir, candidate=candidate or None,
                                endpoint=endpoint or None, split=split or None, light=light)
    return EvaluateResult(report, Path(out_dir) / "report.html")


def compare_reports(spec: Spec, candidate_report: str | Path, champion_report: str | Path,
                    out_dir: str | Path) -> dict[str, Any]:
    """Paired bootstrap of the candidate against the champion (``metrics.seed``, ``gates.confidence``)."""
    from aicd.components.evaluation.compare import compare_models, write_comparison

    result = compare_models(candidate_report, champion_report, seed=spec.metrics.seed,
                            confidence=spec.metrics.gates.confidence)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_comparison(result, Path(out_dir) / "comparison.json")
    return result


def relocate(entries: list[dict[str, Any]], path: str, uri: str) -> list[dict[str, Any]]:
    """Entries naming files under this pod's ``path`` rewritten to the artifact's ``uri`` (other pods see that)."""
    for e in entries:
        for key in ("report", "model_dir"):
            if e.get(key):
                e[key] = e[key].replace(path, uri, 1)
    return entries


def local_resolver(known: Sequence[tuple[str, str]]) -> Callable[[str], Path]:
    """URI -> local path: under one of the ``(uri, path)`` downloaded inputs, else located as a path or mount."""
    from aicd.components.labeling.review import locate

    def local(uri: str) -> Path:
        for art_uri, art_path in known:
            root = art_uri.rstrip("/")
            if uri == root or uri.startswith(root + "/"):
                return Path(art_path.rstrip("/") + uri[len(root):])
        return locate(uri)
    return local


@dataclass(frozen=True)
class SelectResult:
    """The leaderboard with its chosen entry, and what the chosen Model artifact holds."""

    board: dict[str, Any]
    kind: str  # "model" (a copy of the chosen entry's model) or "base" (a base-candidate reference)
    digest: str

    @property
    def chosen(self) -> dict[str, Any]:
        return self.board["chosen"]


def run_select_candidate(spec: Spec, entries: Sequence[str], known: Sequence[tuple[str, str]],
                         leaderboard_dir: str | Path, model_dir: str | Path, model_uri: str) -> SelectResult:
    """Rank every entry (JSON lists of leaderboard entries) under ``metrics``' weights and constraints; write
    the leaderboard (reports copied beside it) and the chosen entry as a Model artifact at ``model_dir``; reads
    task, candidates and metrics."""
    from aicd.components.evaluation.leaderboard import select_candidate, write_chosen_model, write_leaderboard

    local = local_resolver(known)
    board = select_candidate(spec, [e for text in entries for e in json.loads(text)])
    delivered = write_chosen_model(board, model_dir, local)
    chosen = board["chosen"]
    if chosen.get("model_dir"):  # what scoping delivers: select_candidate's own copy
        for e in board["entries"]:
            if e["name"] == chosen["name"]:
                e["model_dir"] = model_uri
        chosen["model_dir"] = model_uri
    write_leaderboard(board, leaderboard_dir, local)
    return SelectResult(board, delivered["kind"], delivered["digest"] or "")


def plan_training_trials(spec: Spec) -> list[dict[str, Any]]:
    """One ``training`` section per hyper-parameter trial (grid or random over ``training.search_space``)."""
    from aicd.components.evaluation.search import plan_trials, trial_spec

    method = spec.training.methods[0].name
    return [trial_spec(spec, params, method)["training"] for params in plan_trials(spec)]


def run_select_trial(spec: Spec, results: Sequence[str], leaderboard_dir: str | Path) -> dict[str, Any]:
    """The best hyper-parameter trial (evaluate_model summaries) under the selection rule; reads task, metrics
    and candidates. The leaderboard of the trials is written to ``leaderboard_dir``."""
    from aicd.components.evaluation.leaderboard import select_candidate, write_leaderboard

    rows = [json.loads(text) for text in results]
    entries = [{"name": f"trial {k} ({(r['model']['digest'] or '')[:19]})", "mode": "trial",
                "candidate": spec.candidate().name, "selectable": True, "metrics": r["metrics"],
                "intervals": {m: [v, v] for m, v in r["metrics"].items()}, "digest": r["model"]["digest"]}
               for k, r in enumerate(rows)]
    board = select_candidate(spec, entries)
    write_leaderboard(board, leaderboard_dir)
    best = next(e for e in board["entries"] if e["name"] == board["chosen"]["name"])
    return {"trial": best["name"], "digest": best["digest"], "score": best["score"]}


def copy_html(source: str | Path, target: str | Path) -> None:
    shutil.copyfile(source, target)
