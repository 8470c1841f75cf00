"""Regression test of the collapse case: on a data set where the majority class dominates, a
constant predictor is refused and a trained classifier passes, against a champion that is the
base encoder with an untrained head (the first delivery of the issue).

Real parts: the data set on disk, the tiny random encoder as the champion, TF-IDF + logistic
regression (scikit-learn) as the trained classifier, compare_models and the gate. The
constant predictor is the collapsed model itself (it predicts one class, as the collapsed
LoRA classifier did), not a stand-in for anything.
"""

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from aicd.components.data.format import read_split, write_dataset
from aicd.components.delivery.gate import gate_candidate
from aicd.components.evaluation.backends import Backend
from aicd.components.evaluation.baselines import tfidf_baseline
from aicd.components.evaluation.compare import compare_models
from aicd.components.evaluation.evaluate import evaluate_model, run_evaluation, train_labels
from aicd.components.evaluation.inference import Outputs
from aicd.components.evaluation.trivial import baseline_predictions, collapse_check
from aicd.components.spec import parse_spec

DIGEST = "sha256:" + "cd" * 32
WORDS = {"positive": ["great", "wonderful", "relief", "helped", "excellent"],
         "negative": ["awful", "terrible", "worse", "nausea", "useless"],
         "neutral": ["okay", "average", "mixed", "unsure", "moderate"]}
FILLER = ["the", "pill", "doctor", "week", "dose", "it", "was", "my", "after", "taking"]


def reviews(n: int, seed: int) -> list[dict]:
    """Reviews with 80% positive, 15% negative, 5% neutral; each carries two words of its class."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choices(["positive", "negative", "neutral"], weights=[80, 15, 5])[0]
        words = rng.sample(FILLER, 5) + rng.sample(WORDS[label], 2)
        rng.shuffle(words)
        rows.append({"id": f"s{seed}-{i}", "text": " ".join(words), "label": label, "source": "test"})
    return rows


@pytest.fixture
def imbalanced(tmp_path, review_sentiment_spec, tiny_encoder) -> tuple[dict, Path]:
    ds = tmp_path / "ds"
    write_dataset(ds, {"train": reviews(300, 1), "validation": reviews(40, 2), "test": reviews(160, 3)},
                  task="text-classification")
    review_sentiment_spec["candidates"] = [{"name": "tiny", "uri": str(tiny_encoder)}]
    review_sentiment_spec["metrics"].update(bootstrap_samples=300, max_examples=None)
    return review_sentiment_spec, ds


@dataclass
class Constant(Backend):
    label: str = "positive"

    def predict(self, inputs):
        return Outputs([self.label] * len(inputs), [0.1] * len(inputs), 0, 0.001)


def _gate(spec, ds, backend, champion_report):
    rows = read_split(ds, "test")
    report, _ = run_evaluation(spec, rows, backend, "test", train=train_labels(spec, ds))
    return report, gate_candidate(spec, report, compare_models(report, champion_report), DIGEST,
                                  champion=champion_report["model"])


def test_constant_predictor_refused_trained_classifier_passes(imbalanced, tmp_path):
    raw, ds = imbalanced
    spec = parse_spec(raw)
    champion = evaluate_model(spec, ds, tmp_path / "champion")  # the base encoder, untrained head

    constant, blessing = _gate(spec, ds, Constant(model_info={"name": "collapsed", "digest": DIGEST}), champion)
    assert constant["metrics"]["accuracy"]["value"] > 0.7  # above the accuracy threshold 0.5 ...
    assert not blessing["passed"]  # ... and still refused
    checks = {c["name"]: c for c in blessing["checks"]}
    assert checks["threshold:accuracy"]["passed"]
    assert not checks["baseline:majority"]["passed"]
    assert "does not beat it significantly" in checks["baseline:majority"]["detail"]
    assert not checks["behavioural:no-collapse"]["passed"]
    assert "collapsed to one class" in checks["behavioural:no-collapse"]["detail"]
    assert constant["baselines"]["majority"]["vs_candidate"]["macro_f1"]["diff"] == pytest.approx(0.0)

    tfidf = tfidf_baseline(spec, ds)
    tfidf.model_info = {**tfidf.model_info, "digest": DIGEST}
    trained, blessing = _gate(spec, ds, tfidf, champion)
    assert blessing["passed"], blessing["reasons"]
    row = trained["baselines"]["majority"]["vs_candidate"]["macro_f1"]
    assert row["low"] > 0 and trained["behavioural"]["no-collapse"]["passed"]


def test_a_report_without_baselines_is_refused(imbalanced, tmp_path):
    raw, ds = imbalanced
    spec = parse_spec(raw)
    tfidf = tfidf_baseline(spec, ds)
    tfidf.model_info = {**tfidf.model_info, "digest": DIGEST}
    report, _ = run_evaluation(spec, read_split(ds, "test"), tfidf, "test", train=train_labels(spec, ds))
    del report["baselines"]
    blessing = gate_candidate(spec, report, compare_models(report, report), DIGEST)
    assert not blessing["passed"]
    assert any("has no majority baseline" in r for r in blessing["reasons"]), blessing["reasons"]


def test_baselines_follow_the_train_split():
    labels = ["negative", "neutral", "positive"]
    preds = baseline_predictions(["neutral"] * 5 + ["positive"] * 3, labels, 200, seed=0)
    assert preds["majority"] == ["neutral"] * 200
    share = preds["stratified"].count("neutral") / 200
    assert 0.5 < share < 0.75 and "negative" not in preds["stratified"]
    assert baseline_predictions(["a", "b"], ["a", "b"], 10, 0)["majority"] == ["a"] * 10  # ties: first label


def test_collapse_check():
    assert not collapse_check(["x"] * 4, ["x", "y", "x", "x"])["passed"]
    assert collapse_check(["x"] * 4, ["x"] * 4)["passed"]  # one class in the references: nothing to tell apart
    ok = collapse_check(["x", "y", "x", "x"], ["x", "y", "y", "x"])
    assert ok["passed"] and ok["pass_rate"] == pytest.approx(0.25)
