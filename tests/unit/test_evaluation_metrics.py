"""Each metric of the evaluation contract against values computed by hand."""

import math

import numpy as np
import pytest

from aicd.components.evaluation import metrics as m

TEXT_CASES = [
    # metric, prediction, reference, hand-computed value
    ("exact_match", "The Cat!", "cat", 1.0),                     # case, punctuation, article removed
    ("exact_match", "a dog", "cat", 0.0),
    # P=2/3 (cat sat|cat sat down), R=1
    ("token_f1", "the cat sat down", "a cat sat", 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)),
    ("token_f1", "dog", "cat", 0.0),
    ("token_f1", "", "", 1.0),
    ("token_f1", "cat", "", 0.0),
    # LCS(a b c d, a c d e) = a c d = 3; P = 3/4, R = 3/4
    ("rouge_l", "a b c d", "a c d e", 0.75),
    # LCS(x a y b, a b) = 2; P = 2/4, R = 1 -> F = 2/3
    ("rouge_l", "x a y b", "a b", 2 / 3),
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty
    ("bleu", "the cat sat on the mat", "the cat sat on a mat", (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25),
    # 1-gram 2/3, 2-gram 1/2, 3-gram 0 matches -> exp smoothing 1/(2*1); no 4-grams (effective order 3)
    ("bleu", "the cat sat", "the cat ran", (2 / 3 * 1 / 2 * 1 / 2) ** (1 / 3)),
    ("bleu", "same words here ok", "same words here ok", 1.0),
    # character n-grams: 1-gram P=R=2/3, 2-gram 1/2, 3-gram 0 (orders 4-6 do not exist): mean 7/18
    ("chrf", "abc", "abd", 7 / 18),
    ("chrf", "hello", "hello", 1.0),
]


@pytest.mark.parametrize("metric,prediction,reference,expected", TEXT_CASES)
def test_text_metrics_match_hand_values(metric, prediction, reference, expected):
    assert m.TEXT_METRICS[metric](prediction, reference) == pytest.approx(expected, abs=1e-4)


PRED = ["pos", "pos", "neg", "neu", "neg", "pos"]
REF = ["pos", "neg", "neg", "neu", "pos", "pos"]
LABELS = ["neg", "neu", "pos"]


def test_confusion_matrix_and_per_class_by_hand():
    summary = m.classification_summary(PRED, REF, LABELS)
    # rows = reference: neg -> (neg 1, pos 1); neu -> neu 1; pos -> (neg 1, pos 2)
    assert summary["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [1, 0, 2]]
    pc = summary["per_class"]
    assert pc["neg"]["precision"] == pytest.approx(1 / 2) and pc["neg"]["recall"] == pytest.approx(1 / 2)
    assert pc["pos"]["precision"] == pytest.approx(2 / 3) and pc["pos"]["recall"] == pytest.approx(2 / 3)
    assert pc["neu"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def _examples(pred, ref):
    return {"ids": [str(i) for i in range(len(pred))], "predictions": pred, "references": ref,
            "scores": {"accuracy": [float(p == r) for p, r in zip(pred, ref)]}}


def test_accuracy_and_macro_f1_by_hand():
    ex = _examples(PRED, REF)
    everything = np.arange(len(PRED))
    assert m.aggregate("accuracy", ex, everything, LABELS)[0] == pytest.approx(4 / 6)
    # F1 per class: neg 1/2, neu 1, pos 2/3 -> mean 13/18
    assert m.aggregate("macro_f1", ex, everything, LABELS)[0] == pytest.approx(13 / 18)
    assert m.aggregate("recall/pos", ex, everything, LABELS)[0] == pytest.approx(2 / 3)
    from sklearn.metrics import f1_score

    assert 13 / 18 == pytest.approx(f1_score(REF, PRED, average="macro"))


def test_perplexity_is_token_weighted():
    ex = {"ids": ["a", "b"], "scores": {"nll": [1.0, 2.0]}, "token_counts": [1, 3]}
    # exp((1*1 + 2*3) / 4)
    assert m.aggregate("perplexity", ex, np.arange(2))[0] == pytest.approx(math.exp(7 / 4))
    assert m.aggregate("nll", ex, np.arange(2))[0] == pytest.approx(1.5)


def test_bootstrap_interval_brackets_value_and_is_reproducible():
    rng = np.random.default_rng(1)
    ex = {"ids": [str(i) for i in range(200)], "scores": {"token_f1": rng.random(200).tolist()}}
    first = m.bootstrap_metrics(ex, None, samples=500, seed=3)["token_f1"]
    again = m.bootstrap_metrics(ex, None, samples=500, seed=3)["token_f1"]
    assert first == again
    assert first["low"] < first["value"] < first["high"]
    # The standard error of a mean of U(0,1) over 200 draws is ~0.02: the 95% interval is ~0.08 wide.
    assert 0.05 < first["high"] - first["low"] < 0.12


def test_bootstrap_of_constant_scores_is_a_point():
    ex = {"ids": ["a", "b", "c"], "scores": {"exact_match": [1.0, 1.0, 1.0]}}
    assert m.bootstrap_metrics(ex, None, samples=50, seed=0)["exact_match"] == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_bootstrap_subset_uses_only_those_examples():
    ex = {"ids": list("abcd"), "scores": {"accuracy": [1.0, 1.0, 0.0, 0.0]}}
    assert m.bootstrap_metrics(ex, None, samples=20, seed=0, subset=np.array([2, 3]))["accuracy"]["value"] == 0.0
