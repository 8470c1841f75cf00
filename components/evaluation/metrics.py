"""Metrics of the evaluation contract, per example where they are defined.

Every metric is an aggregate over per-example data, so one bootstrap (and one paired
bootstrap in :mod:`compare`) serves them all:

- mean metrics: the mean of a per-example score (accuracy, exact_match, token_f1,
  rouge_l, chrf, bleu, nll);
- ``perplexity``: ``exp`` of the token-weighted mean NLL (per-example ``nll`` and
  ``token_counts``);
- ``macro_f1`` and per-class ``precision/<label>``, ``recall/<label>``: recomputed
  from the predictions and references of the sampled examples.

All scores are fractions in [0, 1] (sacrebleu's BLEU and chrF are divided by 100;
BLEU is sentence BLEU with sacrebleu's default exponential smoothing).
"""

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

MEAN_METRICS = {"accuracy", "exact_match", "token_f1", "rouge_l", "chrf", "bleu", "nll"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


# ---------------------------------------------------------------- generation, per example
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 over normalised tokens; two empty answers match (1.0)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta 1) over lower-cased word tokens."""
    pred, ref = re.findall(r"\w+", prediction.lower()), re.findall(r"\w+", reference.lower())
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def bleu(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(prediction, [reference]).score / 100.0


def chrf(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(prediction, [reference]).score / 100.0


TEXT_METRICS = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l,
                "chrf": chrf, "bleu": bleu}


def generation_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-example text scores of generated answers against references."""
    return {name: [fn(p, r) for p, r in zip(predictions, references)] for name, fn in TEXT_METRICS.items()}


# ---------------------------------------------------------------- classification
def confusion_matrix(predictions: Sequence[str], references: Sequence[str], labels: list[str]) -> np.ndarray:
    """Rows: reference label, columns: predicted label, in ``labels`` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for p, r in zip(predictions, references):
        matrix[index[r], index[p]] += 1
    return matrix


def _per_class(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, f1) per class; 0 where undefined (no predictions or no support)."""
    tp = np.diag(matrix).astype(float)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return precision, recall, f1


def macro_f1_from_matrix(matrix: np.ndarray) -> float:
    """Macro F1 over the classes present in the references or the predictions."""
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    if not present.any():
        return 0.0
    return float(_per_class(matrix)[2][present].mean())


def classification_summary(predictions: list[str], references: list[str], labels: list[str]) -> dict[str, Any]:
    """Confusion matrix and per-class precision, recall, F1 and support."""
    matrix = confusion_matrix(predictions, references, labels)
    precision, recall, f1 = _per_class(matrix)
    support = matrix.sum(axis=1)
    per_class = {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                         "support": int(support[i])} for i, label in enumerate(labels)}
    return {"labels": labels, "confusion_matrix": matrix.tolist(), "per_class": per_class}


# ---------------------------------------------------------------- aggregation and bootstrap
def _class_metric(metric: str, matrix: np.ndarray, labels: list[str]) -> float:
    if metric == "macro_f1":
        return macro_f1_from_matrix(matrix)
    kind, _, label = metric.partition("/")
    precision, recall, _ = _per_class(matrix)
    return float((precision if kind == "precision" else recall)[labels.index(label)])


def metric_names(examples: dict[str, Any], labels: list[str] | None) -> list[str]:
    """Every metric the per-example data of a report supports."""
    names = list(examples["scores"])
    if labels and examples.get("references") is not None:
        names += ["macro_f1"] + [f"{k}/{label}" for k in ("precision", "recall") for label in labels]
    if "nll" in examples["scores"] and examples.get("token_counts") is not None:
        names.append("perplexity")
    return names


def aggregate(metric: str, examples: dict[str, Any], idx: np.ndarray, labels: list[str] | None = None) -> np.ndarray:
    """The metric on each row of ``idx`` (shape [B, n] of example indices): shape [B]."""
    idx = np.atleast_2d(idx)
    if metric in examples["scores"] and metric != "perplexity":
        return np.asarray(examples["scores"][metric], dtype=float)[idx].mean(axis=1)
    if metric == "perplexity":
        nll = np.asarray(examples["scores"]["nll"], dtype=float)
        tokens = np.asarray(examples["token_counts"], dtype=float)
        return np.exp((nll * tokens)[idx].sum(axis=1) / np.maximum(tokens[idx].sum(axis=1), 1.0))
    if labels is None:
        raise KeyError(f"metric {metric!r} needs labels")
    index = {label: i for i, label in enumerate(labels)}
    pred = np.array([index[p] for p in examples["predictions"]])
    ref = np.array([index[r] for r in examples["references"]])
    k = len(labels)
    out = np.empty(idx.shape[0])
    for b, row in enumerate(idx):
        matrix = np.bincount(ref[row] * k + pred[row], minlength=k * k).reshape(k, k)
        out[b] = _class_metric(metric, matrix, labels)
    return out


def resample_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` bootstrap resamples of ``range(n)``: shape [samples, n], reproducible."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values."""
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_metrics(examples: dict[str, Any], labels: list[str] | None, samples: int, seed: int,
                      confidence: float = 0.95, subset: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """``{metric: {value, low, high}}`` over all examples, or over the indices in ``subset``."""
    rows = np.arange(len(examples["ids"])) if subset is None else np.asarray(subset)
    resampled = rows[resample_indices(len(rows), samples, seed)]
    out = {}
    for metric in metric_names(examples, labels):
        value = float(aggregate(metric, examples, rows[None, :], labels)[0])
        low, high = interval(aggregate(metric, examples, resampled, labels), confidence)
        out[metric] = {"value": value, "low": low, "high": high}
    return out
