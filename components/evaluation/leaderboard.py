"""Benchmark the spec's candidates with the evaluation contract and choose one.

Each candidate is evaluated on the validation split (the test split stays for the
gate): causal LMs zero-shot and few-shot (the first ``FEW_SHOT`` train pairs as
earlier chat turns), encoders through a short linear probe. Classification adds the
TF-IDF baseline, ranked for reference but never chosen. The choice maximises
``metrics.selection_weights`` (default: the primary metric) among the entries that
meet ``metrics.constraints`` (an upper bound for lower-is-better metrics such as
``latency_p95_ms``, a lower bound otherwise).
"""

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_dir, atomic_write_text
from aicd.components.errors import AicdError, EvaluationError
from aicd.components.evaluation.compare import higher_is_better
from aicd.components.spec import Spec

log = logging.getLogger(__name__)
FEW_SHOT = 2
SELECTION_SPLIT = "validation"


def candidate_modes(spec: Spec) -> list[str]:
    return ["linear-probe"] if spec.task.type == "text-classification" else ["zero-shot", f"few-shot-{FEW_SHOT}"]


def evaluate_candidate(spec: Spec, dataset_dir: str | Path, candidate: str, out_dir: str | Path,
                       split: str = SELECTION_SPLIT) -> list[dict[str, Any]]:
    """Evaluate one candidate in each of its modes; one leaderboard entry per mode (reports under out_dir)."""
    from aicd.components.data.format import read_split
    from aicd.components.evaluation.baselines import train_linear_probe
    from aicd.components.evaluation.evaluate import evaluate_model

    out_dir = Path(out_dir)
    cand = spec.candidate(candidate)
    entries = []
    for mode in candidate_modes(spec):
        where = out_dir / mode
        if mode == "linear-probe":
            model_dir = train_linear_probe(spec, dataset_dir, cand.name, out_dir / "models" / cand.name)
            report = evaluate_model(spec, dataset_dir, where, model=model_dir, candidate=cand.name, split=split)
            extra = {"model_dir": str(model_dir)}
        else:
            shots = []
            if mode != "zero-shot":
                train = read_split(dataset_dir, "train")[:FEW_SHOT]
                shots = [[str(r[spec.task.fields[0]]), str(r[spec.task.fields[1]])] for r in train]
            report = evaluate_base(spec, dataset_dir, where, cand.name, mode, shots, split)
            # the examples themselves, so the chosen entry is evaluated again in exactly this mode
            extra = {"shots": len(shots), "shot_examples": shots}
        entries.append(entry(report, cand.name, mode, where, selectable=True, **extra))
    return entries


def evaluate_base(spec: Spec, dataset_dir: str | Path, out_dir: str | Path, candidate: str | None,
                  mode: str = "zero-shot", shots: list[list[str]] | None = None,
                  split: str | None = None) -> dict[str, Any]:
    """Evaluate a base causal-LM candidate in a leaderboard mode (``shots``: the few-shot (question,
    answer) pairs, as earlier chat turns); the report (written to ``out_dir``) names the mode."""
    from aicd.components.evaluation.evaluate import load_rows, open_local, run_evaluation, train_labels
    from aicd.components.evaluation.report import write_report

    split = split or spec.metrics.split
    rows = load_rows(spec, dataset_dir, split)
    backend, _ = open_local(spec, rows, None, candidate, shots=[tuple(s) for s in shots or []])
    report, latencies = run_evaluation(spec, rows, backend, split, train=train_labels(spec, dataset_dir))
    report["model"] = {**report["model"], "mode": mode, "shots": len(shots or [])}
    write_report(report, out_dir, latencies)
    return report


def entry(report: dict[str, Any], candidate: str | None, mode: str, report_dir: str | Path, *,
          selectable: bool, **extra: Any) -> dict[str, Any]:
    """A leaderboard row: the report's metric values and intervals, and where the report is."""
    return {"name": f"{candidate or report['model']['name']}/{mode}", "candidate": candidate, "mode": mode,
            "selectable": selectable, "report": str(Path(report_dir) / "report.json"),
            "metrics": {k: v["value"] for k, v in report["metrics"].items()},
            "intervals": {k: [v["low"], v["high"]] for k, v in report["metrics"].items()},
            "prompt_template": report.get("prompt_template"), "n": report["n"], **extra}


def baseline_entries(spec: Spec, dataset_dir: str | Path, out_dir: str | Path,
                     split: str = SELECTION_SPLIT) -> list[dict[str, Any]]:
    """The TF-IDF + logistic regression baseline for classification; nothing for causal LMs."""
    if spec.task.type != "text-classification":
        return []
    from aicd.components.evaluation.baselines import tfidf_baseline
    from aicd.components.evaluation.evaluate import load_rows, run_evaluation, train_labels
    from aicd.components.evaluation.report import write_report

    rows = load_rows(spec, dataset_dir, split)
    report, latencies = run_evaluation(spec, rows, tfidf_baseline(spec, dataset_dir, spec.metrics.seed), split,
                                       train=train_labels(spec, dataset_dir))
    write_report(report, Path(out_dir), latencies)
    return [entry(report, None, "baseline", out_dir, selectable=False)]


def _violations(metrics: dict[str, float], constraints: dict[str, float]) -> list[str]:
    out = []
    for metric, bound in constraints.items():
        value = metrics.get(metric)
        if value is None:
            out.append(f"{metric} was not measured")
        elif higher_is_better(metric) and value < bound:
            out.append(f"{metric} {value:.4g} < {bound:g}")
        elif not higher_is_better(metric) and value > bound:
            out.append(f"{metric} {value:.4g} > {bound:g}")
    return out


def select_candidate(spec: Spec, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Score, check constraints, rank; the leaderboard with its ``chosen`` entry."""
    weights = dict(spec.metrics.selection_weights) or {spec.metrics.primary: 1.0}
    rows = []
    for e in entries:
        missing = [m for m in weights if m not in e["metrics"]]
        score = None if missing else sum(w * (e["metrics"][m] if higher_is_better(m) else -e["metrics"][m])
                                         for m, w in weights.items())
        violations = _violations(e["metrics"], dict(spec.metrics.constraints)) + [
            f"{m} was not measured" for m in missing]
        rows.append({**e, "score": score, "violations": violations, "eligible": not violations})
    rows.sort(key=lambda r: (r["score"] is not None, r["score"] or 0.0), reverse=True)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    eligible = [r for r in rows if r["eligible"] and r["selectable"]]
    if not eligible:
        why = "; ".join(f"{r['name']}: {', '.join(r['violations']) or 'not selectable'}" for r in rows)
        raise EvaluationError(f"no candidate meets `metrics.constraints` {dict(spec.metrics.constraints)} ({why})",
                              "add a candidate, or relax the constraints in the spec")
    chosen = eligible[0]
    best_baseline = next((r for r in rows if not r["selectable"] and r["score"] is not None), None)
    return {"kind": "leaderboard", "task": spec.task.type, "split": SELECTION_SPLIT, "weights": weights,
            "constraints": dict(spec.metrics.constraints), "entries": rows,
            "chosen": {"name": chosen["name"], "candidate": chosen["candidate"], "mode": chosen["mode"],
                       "uri": spec.candidate(chosen["candidate"]).uri, "score": chosen["score"],
                       "prompt_template": chosen.get("prompt_template"), "shots": chosen.get("shots", 0),
                       "shot_examples": chosen.get("shot_examples") or [], "model_dir": chosen.get("model_dir")},
            "baseline_beats_chosen": bool(best_baseline and best_baseline["score"] > chosen["score"])}


def render_leaderboard_html(board: dict[str, Any]) -> str:
    import html

    from aicd.components.evaluation.report import metric_bars

    head = ["rank", "name", "score", "eligible", "violations"] + list(board["weights"])
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
        r["rank"], r["name"], None if r["score"] is None else round(r["score"], 4), r["eligible"],
        "; ".join(r["violations"]), *[round(r["metrics"].get(m, float("nan")), 4) for m in board["weights"]]))
        + "</tr>" for r in board["entries"])
    plots = [metric_bars({r["name"]: {"value": r["metrics"][m], "low": r["intervals"][m][0],
                                      "high": r["intervals"][m][1]} for r in board["entries"] if m in r["metrics"]},
                         f"{m} (95% CI)") for m in board["weights"]]
    return ("<!doctype html><html><head><meta charset='utf-8'></head><body><h1>Leaderboard</h1>"
            f"<p>chosen: <b>{html.escape(board['chosen']['name'])}</b>; TF-IDF baseline beats it: "
            f"{board['baseline_beats_chosen']}</p><table border=1><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{rows}</table>" + "".join(plots)
            + "</body></html>")


REPORTS = "reports"
_REPORT_FILES = ("report.json", "report.html", "card.json")


def _copy_report(where: Path, dest: Path) -> str:
    """Copy one entry's report (its folder, or the file with its report.html/card.json siblings) to ``dest``;
    the report.json path relative to dest's parent's parent (the leaderboard folder)."""
    import shutil

    if where.is_dir():
        shutil.copytree(where, dest)
        return f"{REPORTS}/{dest.name}/report.json"
    dest.mkdir(parents=True)
    shutil.copyfile(where, dest / where.name)
    if where.name == "report.json":
        for sibling in _REPORT_FILES[1:]:
            if (where.parent / sibling).is_file():
                shutil.copyfile(where.parent / sibling, dest / sibling)
    return f"{REPORTS}/{dest.name}/{where.name}"


def write_leaderboard(board: dict[str, Any], out_dir: str | Path,
                      local: Callable[[str], Path] | None = None) -> Path:
    """leaderboard.json, leaderboard.html and chosen.json, atomically, with every entry's report copied
    under ``reports/`` and its ``report`` rewritten relative to ``out_dir``: the leaderboard artifact
    alone is enough to review the entries (a KFP pod downloads only its own inputs).

    ``local`` turns an entry's report location (a path, or another step's artifact URI) into a local
    path; the default takes it as a path. Entries without a report keep none.
    """
    import copy
    import re

    board = copy.deepcopy(board)
    local = local or Path
    with atomic_dir(out_dir) as tmp:
        for i, e in enumerate(board["entries"]):
            if not e.get("report"):
                continue
            try:
                where = Path(local(str(e["report"])))
            except AicdError as err:
                raise EvaluationError(f"the report {e['report']} of leaderboard entry {e['name']!r} cannot be read "
                                      f"({err.message})", "run the benchmark again") from None
            if not where.exists():
                raise EvaluationError(f"the report {e['report']} of leaderboard entry {e['name']!r} does not exist",
                                      "run the benchmark again; its reports must stay where its steps wrote them")
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(e["name"])).strip("-.") or "entry"
            e["report"] = _copy_report(where, tmp / REPORTS / f"{i:02d}-{slug}")
        atomic_write_text(tmp / "leaderboard.json", json.dumps(board, indent=2, sort_keys=True) + "\n")
        atomic_write_text(tmp / "leaderboard.html", render_leaderboard_html(board))
        atomic_write_text(tmp / "chosen.json", json.dumps(board["chosen"], indent=2, sort_keys=True) + "\n")
    return Path(out_dir) / "leaderboard.json"


def write_chosen_model(board: dict[str, Any], out_dir: str | Path,
                       local: Callable[[str], Path] | None = None) -> dict[str, Any]:
    """The chosen entry as a Model artifact at ``out_dir``, the one thing delivery needs from the benchmark.

    When its mode produced a model folder (``model_dir``: a linear probe, a trial's model), a copy
    of it, verified against its card first (the card's digest is what the gate blesses). Otherwise
    (a bare base model, zero- or few-shot) a reference to the spec's candidate
    (:data:`aicd.components.models.BASE_MODEL_REF`: ``{"candidate", "mode", "shot_examples"}``),
    which evaluate_model evaluates in that mode and the delivery steps deliver as the base model.
    Returns ``{"kind": "model" | "base", "digest": card digest or None}``.
    """
    import shutil

    from aicd.components.cards import verify_card
    from aicd.components.models import BASE_MODEL_REF

    chosen = board["chosen"]
    local = local or Path
    with atomic_dir(out_dir) as tmp:
        if chosen.get("model_dir"):
            try:
                source = Path(local(str(chosen["model_dir"])))
                digest = verify_card(source)["digest"]
            except AicdError as err:
                raise EvaluationError(f"the model {chosen['model_dir']} of the chosen entry {chosen['name']!r} cannot "
                                      f"be used: {err.message}", "run the benchmark again") from None
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            return {"kind": "model", "digest": digest}
        ref = {"candidate": chosen["candidate"], "mode": chosen["mode"],
               "shot_examples": chosen.get("shot_examples") or []}
        atomic_write_text(tmp / BASE_MODEL_REF, json.dumps(ref, indent=2, sort_keys=True) + "\n")
    return {"kind": "base", "digest": None}


def read_base_ref(path: str | Path) -> dict[str, Any] | None:
    """The base-model reference at a Model artifact ``path`` as a dict (``candidate``, ``mode``,
    ``shot_examples``), or None for a real model; :func:`aicd.components.contracts.read_model_ref` reads it."""
    from aicd.components.contracts import read_model_ref

    ref = read_model_ref(path, verify=False)
    if not ref.is_base:
        return None
    return {"candidate": ref.candidate, "mode": ref.mode, "shot_examples": [list(s) for s in ref.shot_examples]}


def benchmark_candidates(spec: Spec | dict, dataset_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Every candidate (and the baseline) in this process; the leaderboard written to ``out_dir/leaderboard``."""
    from aicd.components.evaluation.evaluate import as_spec

    spec = as_spec(spec)
    out_dir = Path(out_dir)
    entries = baseline_entries(spec, dataset_dir, out_dir / "baseline")
    for cand in spec.candidates:
        entries += evaluate_candidate(spec, dataset_dir, cand.name, out_dir / "candidates" / cand.name)
    board = select_candidate(spec, entries)
    write_leaderboard(board, out_dir / "leaderboard")
    log.info("leaderboard: chose %s (score %.4f)", board["chosen"]["name"], board["chosen"]["score"])
    return board
