"""Issue 18 on the real data: the fine-tuned review-sentiment classifier against TF-IDF and the linear probe.

all-MiniLM-L6-v2 on the drug reviews with the example spec's first method: all weights fine-tuned
(learning rate 1e-4, 4 epochs of 48 steps, 256 tokens, balanced class weights), the masked mean of
the token vectors feeding the head as the sentence encoder was trained. Scored on the test split
(116 reviews, 7 of them neutral) with the leaderboard's TF-IDF + logistic regression and linear
probe on the same rows; paired bootstrap intervals of the macro-F1 difference.

Measured (one torch thread, 473 CPU seconds of training; the setting was chosen on the validation
split and the test split read once): macro-F1 0.538, TF-IDF 0.492, linear probe 0.419;
difference to TF-IDF +0.047 [-0.062, +0.142], to the probe +0.120 [-0.006, +0.231]. The old spec
(LoRA q/v, 1 epoch, 128 tokens, [CLS] pooler) scored 0.379, -0.113 [-0.215, -0.012] to TF-IDF.

So the classifier beats both on the point estimate, but the issue's claim (the interval excludes
the baseline's score) is not reached on 116 test rows: ``test_interval_excludes_tfidf`` records
it as an expected failure, strict, so reaching it turns the run red until the claim is asserted.
A test split of 303 rows (0.6/0.1/0.3) narrows the interval to about +-0.07, yet the gain over
TF-IDF stays +0.03 to +0.05 (every setting measured is in the example spec's comments): the
neutral class (reviews rated 5-6) carries about half of the interval's variance.
"""

from pathlib import Path

import pytest
import yaml

from aicd.components.data.ingest import ingest_dataset
from aicd.components.evaluation.baselines import tfidf_baseline, train_linear_probe
from aicd.components.evaluation.compare import compare_models
from aicd.components.evaluation.evaluate import evaluate_model, load_rows, run_evaluation, train_labels
from aicd.components.spec import parse_spec
from aicd.components.training.adapter import train_adapter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    """The fine-tuned classifier's test report and its macro-F1 comparisons with TF-IDF and the probe."""
    tmp = tmp_path_factory.mktemp("review-sentiment")
    raw = yaml.safe_load((ROOT / "examples" / "review-sentiment" / "spec.yaml").read_text())
    raw["training"]["checkpoint"] = {"root": str(tmp / "ckpt")}
    spec = parse_spec(raw)
    ds = tmp / "ds"
    ingest_dataset(spec, ds)
    train_adapter(spec, ds, spec.training.methods[0].name, tmp / "model", progress=False)
    report = evaluate_model(spec, ds, tmp / "eval", model=tmp / "model", split="test")
    tfidf, _ = run_evaluation(spec, load_rows(spec, ds, "test"), tfidf_baseline(spec, ds, spec.metrics.seed), "test",
                              train=train_labels(spec, ds))
    probe_model = train_linear_probe(spec, ds, spec.candidates[0].name, tmp / "probe")
    probe = evaluate_model(spec, ds, tmp / "probe-eval", model=probe_model, split="test")
    return {"report": report, "tfidf": compare_models(report, tfidf)["metrics"]["macro_f1"],
            "probe": compare_models(report, probe)["metrics"]["macro_f1"]}


@pytest.mark.slow
def test_fine_tuned_classifier_learns_and_beats_tfidf_and_the_probe(reports):
    report = reports["report"]
    assert report["behavioural"]["no-collapse"]["passed"], report["behavioural"]["no-collapse"]["detail"]
    assert len(set(report["examples"]["predictions"])) == 3
    majority = report["baselines"]["majority"]["vs_candidate"]["macro_f1"]
    assert majority["low"] > 0, majority
    for name in ("tfidf", "probe"):
        assert reports[name]["diff"] > 0, (name, reports[name])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 18's claim is not reached: +0.047 [-0.062, +0.142] on 116 test rows")
def test_interval_excludes_tfidf(reports):
    assert reports["tfidf"]["low"] > 0, reports["tfidf"]
    assert reports["probe"]["low"] > 0, reports["probe"]
