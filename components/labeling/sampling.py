"""Which rows people should label: random, stratified or uncertainty sampling.

Orders are stable as data grows: random order is a salted hash of the row id, so a
new row slots in without reshuffling the others, and every tie breaks on that hash.

Uncertainty needs model scores, given as one of
- ``{id: [p_1, ..., p_k]}``: per-row class probabilities (uncertainty = 1 - margin of
  the top two),
- ``{id: margin}``: a margin or confidence per row (lower = less sure),
- an evaluation report (``report.json``, or the evaluation folder holding it):
  ``examples.ids`` with a per-example metric in
  ``examples.scores`` (lower = the model is weaker on that row).
"""

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from aicd.components.errors import LabelingError
from aicd.components.spec import METRICS

Strategy = Literal["random", "stratified", "uncertainty"]


def hash_order(row_id: str, seed: int | str = 0) -> str:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def _uncertainty(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return -float(value)  # a margin or score: lower means less sure
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(p, (int, float)) for p in value):
        top = sorted((float(p) for p in value), reverse=True)
        return 1.0 - (top[0] - top[1])
    raise LabelingError(f"scores for {where} must be a number (margin) or a list of at least two class "
                        f"probabilities, got {value!r}", "write per-row probabilities or margins keyed by row id")


def load_scores(scores: str | Path | Mapping[str, Any], metric: str | None = None,
                default_metric: str | None = None) -> dict[str, float]:
    """Row id -> uncertainty (higher = the model is less sure) from any accepted score form.

    From a report, ``metric`` names the per-example score to use; otherwise
    ``default_metric`` (the spec's primary metric) when the report has it, else its first.
    """
    source = "scores"
    if isinstance(scores, (str, Path)):
        path, source = Path(scores), str(scores)
        if path.is_dir():  # an evaluation output folder
            path = path / "report.json"
        if not path.is_file():
            raise LabelingError(f"scores file {path} does not exist",
                                "pass per-row probabilities (JSON) or the evaluation report.json")
        try:
            scores = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LabelingError(f"scores file {path} is not valid JSON ({err})", "write it as JSON") from None
    if not isinstance(scores, Mapping):
        raise LabelingError(f"{source} must be a JSON object keyed by row id, or an evaluation report",
                            "write {\"row-id\": [p1, p2, ...]} or pass report.json")
    if scores.get("kind") == "evaluation":
        return _from_report(scores, metric, default_metric, source)
    return {str(k): _uncertainty(v, f"row {k!r} in {source}") for k, v in scores.items()}


def _from_report(report: Mapping[str, Any], metric: str | None, default: str | None,
                 source: str) -> dict[str, float]:
    examples = report.get("examples") or {}
    ids, table = examples.get("ids") or [], examples.get("scores") or {}
    if not table:
        raise LabelingError(f"evaluation report {source} has no per-example scores (`examples.scores`)",
                            "evaluate with per-example scores, or pass class probabilities")
    name = metric or (default if default in table else next(iter(table)))
    if name not in table:
        raise LabelingError(f"evaluation report {source} has no per-example {name!r} scores; "
                            f"it has {', '.join(table)}", "choose one of those metrics")
    values = table[name]
    if len(values) != len(ids):
        raise LabelingError(f"evaluation report {source}: {len(ids)} ids but {len(values)} {name!r} scores",
                            "produce the report again")
    sign = 1.0 if METRICS.get(name, True) else -1.0  # nll, perplexity: higher means weaker
    return {str(i): sign * _uncertainty(v, f"row {i!r} in {source}") for i, v in zip(ids, values)}


def _allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Proportional allocation of n over strata (largest remainder), at least one each when n allows."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    keys = sorted(sizes)
    quota = {k: n * sizes[k] / total for k in keys}
    alloc = {k: int(quota[k]) for k in keys}
    if n >= len(keys):
        for k in keys:
            alloc[k] = max(alloc[k], 1)
    while sum(alloc.values()) > n:  # the minimum of one overshot: take from the largest
        k = max((k for k in keys if alloc[k] > 1), key=lambda k: (alloc[k] - quota[k], alloc[k]))
        alloc[k] -= 1
    for k in sorted(keys, key=lambda k: (-(quota[k] - alloc[k]), k)):
        if sum(alloc.values()) >= n:
            break
        if alloc[k] < sizes[k]:
            alloc[k] += 1
    return alloc


def select(rows: list[dict[str, Any]], n: int, strategy: Strategy, seed: int | str = 0,
           stratify_by: str | None = None, uncertainty: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """The n rows to label next, in labeling order."""
    if n <= 0 or not rows:
        return []
    ordered = sorted(rows, key=lambda r: hash_order(str(r["id"]), seed))
    if strategy == "random":
        return ordered[:n]
    if strategy == "uncertainty":
        if not uncertainty:
            raise LabelingError("uncertainty sampling needs model scores, none were given",
                                "pass scores (per-row class probabilities or an evaluation report.json), "
                                "or set `labeling.sampling` to random or stratified")
        scored = [r for r in ordered if str(r["id"]) in uncertainty]
        unscored = [r for r in ordered if str(r["id"]) not in uncertainty]
        scored.sort(key=lambda r: -uncertainty[str(r["id"])])  # stable: ties keep the hash order
        return (scored + unscored)[:n]
    if strategy == "stratified":
        if not stratify_by:
            raise LabelingError("stratified sampling needs a column to stratify by",
                                "pass stratify_by (e.g. label or topic), or use random sampling")
        strata: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in ordered:
            strata[str(row.get(stratify_by))].append(row)
        alloc = _allocate({k: len(v) for k, v in strata.items()}, n)
        picked = {str(r["id"]) for k, v in strata.items() for r in v[:alloc[k]]}
        return [r for r in ordered if str(r["id"]) in picked]
    raise LabelingError(f"unknown sampling strategy {strategy!r}", "use random, stratified or uncertainty")
