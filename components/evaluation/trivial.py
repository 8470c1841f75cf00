"""Trivial baselines every classification evaluation scores on the same rows, and the collapse check.

A classifier is worth delivering only when it beats what needs no model at all:

- ``majority``: always the most frequent class of the train split;
- ``stratified``: a random class drawn with the train split's class frequencies (seeded).

Each baseline is scored with the evaluation's bootstrap, and the candidate's paired
difference to it (same resamples, same rows) is recorded, so the gate can demand that the
candidate beats the majority class with its interval. The behavioural check
``no-collapse`` fails a candidate that predicts a single class for every row.
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from aicd.components.evaluation import metrics as M

BASELINES = ("majority", "stratified")
COLLAPSE_CHECK = "no-collapse"
_COMPARED = ("accuracy", "macro_f1")


def _frequencies(train_labels: Sequence[str], labels: list[str]) -> np.ndarray:
    counts = Counter(str(x) for x in train_labels)
    freq = np.array([counts.get(label, 0) for label in labels], dtype=float)
    return freq / freq.sum() if freq.sum() > 0 else np.full(len(labels), 1.0 / len(labels))


def baseline_predictions(train_labels: Sequence[str], labels: list[str], n: int, seed: int) -> dict[str, list[str]]:
    """The predictions of each trivial baseline on ``n`` rows (ties of the majority: first in ``labels``)."""
    freq = _frequencies(train_labels, labels)
    majority = labels[int(np.argmax(freq))]
    drawn = np.random.default_rng(seed).choice(len(labels), size=n, p=freq)
    return {"majority": [majority] * n, "stratified": [labels[i] for i in drawn]}


def score_baselines(examples: dict[str, Any], labels: list[str], train_labels: Sequence[str], samples: int,
                    seed: int, confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """``{baseline: {predictions_summary, metrics, vs_candidate}}`` on the rows of ``examples``.

    ``vs_candidate[metric]`` is the paired bootstrap of candidate minus baseline: ``{diff, low, high}``.
    """
    refs, n = list(examples["references"]), len(examples["ids"])
    idx = M.resample_indices(n, samples, seed)
    everything = np.arange(n)[None, :]
    out = {}
    for name, preds in baseline_predictions(train_labels, labels, n, seed).items():
        base = {"ids": examples["ids"], "predictions": preds, "references": refs,
                "scores": {"accuracy": [float(p == r) for p, r in zip(preds, refs)]}}
        metrics, versus = {}, {}
        for metric in _COMPARED:
            value = float(M.aggregate(metric, base, everything, labels)[0])
            low, high = M.interval(M.aggregate(metric, base, idx, labels), confidence)
            metrics[metric] = {"value": value, "low": low, "high": high}
            cand = float(M.aggregate(metric, examples, everything, labels)[0])
            d_low, d_high = M.interval(M.aggregate(metric, examples, idx, labels)
                                       - M.aggregate(metric, base, idx, labels), confidence)
            versus[metric] = {"candidate": cand, "baseline": value, "diff": cand - value, "low": d_low,
                              "high": d_high}
        out[name] = {"predicted": dict(Counter(preds)), "metrics": metrics, "vs_candidate": versus}
    return out


def collapse_check(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """The ``no-collapse`` behavioural result: fails when one class is predicted for every row
    while the references hold more than one class."""
    counts = Counter(predictions)
    top, top_n = counts.most_common(1)[0] if counts else ("", 0)
    collapsed = len(counts) == 1 and len(set(references)) > 1
    detail = (f"the model predicts {top!r} for all {top_n} rows (the references hold {len(set(references))} "
              "classes): it has collapsed to one class" if collapsed
              else f"the model predicts {len(counts)} classes; the most frequent, {top!r}, "
                   f"for {top_n} of {len(predictions)} rows")
    share = top_n / len(predictions) if predictions else 1.0
    return {"pass_rate": 1.0 - share, "min_pass_rate": 0.0, "passed": not collapsed, "n": len(predictions),
            "detail": detail}
