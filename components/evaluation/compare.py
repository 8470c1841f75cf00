"""compare_models: paired bootstrap between two evaluation reports (the basis of the gate).

Only the examples both reports share (same ids) count. Each bootstrap resample
draws the same examples for both models, so the interval of ``candidate -
champion`` reflects the models' difference, not which examples were drawn.
System metrics have no per-example values: their diff is a point (low == high).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from aicd.components.cards import atomic_write_text, write_card
from aicd.components.errors import EvaluationError
from aicd.components.evaluation import metrics as M
from aicd.components.evaluation.comparison_report import extremes, render_comparison_html
from aicd.components.evaluation.report import load_report
from aicd.components.spec import METRICS, SYSTEM_METRICS


def _subset(examples: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    out = {"ids": [examples["ids"][i] for i in rows],
           "scores": {k: [v[i] for i in rows] for k, v in examples["scores"].items()}}
    for key in ("predictions", "references", "token_counts"):
        if examples.get(key) is not None:
            out[key] = [examples[key][i] for i in rows]
    return out


def higher_is_better(metric: str) -> bool:
    return METRICS.get(metric.split("/")[0], True)


def _labels(report: dict[str, Any]) -> list[str] | None:
    return (report.get("classification") or {}).get("labels")


def compare_models(candidate_report: dict[str, Any] | str | Path, champion_report: dict[str, Any] | str | Path, *,
                   samples: int | None = None, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """``{"n", "confidence", "metrics": {m: {candidate, champion, diff, low, high, higher_is_better}}}``."""
    cand = candidate_report if isinstance(candidate_report, dict) else load_report(candidate_report)
    champ = champion_report if isinstance(champion_report, dict) else load_report(champion_report)
    if cand["task"] != champ["task"]:
        raise EvaluationError(f"cannot compare a {cand['task']} report with a {champ['task']} report",
                              "evaluate both models on the same spec")
    position = {i: k for k, i in enumerate(champ["examples"]["ids"])}
    shared = [(k, position[i]) for k, i in enumerate(cand["examples"]["ids"]) if i in position]
    if not shared:
        raise EvaluationError("the two reports share no example ids: a paired comparison is impossible",
                              "evaluate both models on the same data set split")
    a = _subset(cand["examples"], [k for k, _ in shared])
    b = _subset(champ["examples"], [k for _, k in shared])
    labels = _labels(cand) or _labels(champ)
    if _labels(cand) and _labels(champ) and _labels(cand) != _labels(champ):
        raise EvaluationError(f"label sets differ: {_labels(cand)} vs {_labels(champ)}",
                              "compare models of the same task labels")
    n = len(shared)
    samples = samples or int(cand.get("bootstrap_samples") or 1000)
    idx = M.resample_indices(n, samples, seed)
    everything = np.arange(n)[None, :]
    out: dict[str, dict[str, Any]] = {}
    names = [m for m in M.metric_names(a, labels) if m in M.metric_names(b, labels)]
    for metric in names:
        va = float(M.aggregate(metric, a, everything, labels)[0])
        vb = float(M.aggregate(metric, b, everything, labels)[0])
        low, high = M.interval(M.aggregate(metric, a, idx, labels) - M.aggregate(metric, b, idx, labels), confidence)
        out[metric] = {"candidate": va, "champion": vb, "diff": va - vb, "low": low, "high": high,
                       "higher_is_better": higher_is_better(metric)}
    for metric in sorted(SYSTEM_METRICS):
        va, vb = (cand.get("system") or {}).get(metric), (champ.get("system") or {}).get(metric)
        if va is not None and vb is not None:
            out[metric] = {"candidate": va, "champion": vb, "diff": va - vb, "low": va - vb, "high": va - vb,
                           "higher_is_better": higher_is_better(metric)}
    pairs = _preference(cand, champ, samples, seed, confidence)
    if pairs is not None:
        out["preference_accuracy"] = pairs
    return {"n": n, "confidence": confidence, "metrics": out, "extremes": extremes(a, b)}


def _preference(cand: dict[str, Any], champ: dict[str, Any], samples: int, seed: int,
                confidence: float) -> dict[str, Any] | None:
    """The paired comparison of the preference metric over the pairs both reports scored."""
    a, b = cand.get("preference"), champ.get("preference")
    if not a or not b:
        return None
    where = {i: k for k, i in enumerate(b["ids"])}
    shared = [(k, where[i]) for k, i in enumerate(a["ids"]) if i in where]
    if not shared:
        return None
    sa = np.array([a["scores"][k] for k, _ in shared], dtype=float)
    sb = np.array([b["scores"][k] for _, k in shared], dtype=float)
    idx = M.resample_indices(len(shared), samples, seed)
    low, high = M.interval(sa[idx].mean(axis=1) - sb[idx].mean(axis=1), confidence)
    return {"candidate": float(sa.mean()), "champion": float(sb.mean()), "diff": float(sa.mean() - sb.mean()),
            "low": low, "high": high, "higher_is_better": True, "n": len(shared)}


def write_comparison(comparison: dict[str, Any], path: str | Path) -> Path:
    """Write ``comparison.json`` at ``path`` and, beside it, ``comparison.html`` for people, then a
    ``comparison`` card over the folder (the gate reads the comparison only once the card verifies)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(comparison, indent=2, sort_keys=True) + "\n")
    atomic_write_text(path.with_suffix(".html"), render_comparison_html(comparison))
    write_card(path.parent, "comparison", n=comparison.get("n"), confidence=comparison.get("confidence"))
    return path
