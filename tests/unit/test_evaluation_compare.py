"""compare_models: paired bootstrap on shared ids, with differences checked by hand."""

import numpy as np
import pytest

from aicd.components.errors import EvaluationError
from aicd.components.evaluation.compare import compare_models


def report(ids, scores, task="causal-lm", **extra):
    return {"kind": "evaluation", "task": task, "complete": True, "bootstrap_samples": 200,
            "examples": {"ids": ids, "scores": scores, **extra}, "system": {"latency_p95_ms": 10.0}}


def test_diff_on_shared_ids_only():
    cand = report(["a", "b", "c", "x"], {"token_f1": [1.0, 0.5, 0.0, 0.9]})
    champ = report(["c", "b", "a", "y"], {"token_f1": [0.0, 0.25, 0.5]})
    out = compare_models(cand, champ)
    m = out["metrics"]["token_f1"]
    assert out["n"] == 3 and out["confidence"] == 0.95
    # shared a, b, c: candidate mean (1 + .5 + 0)/3 = .5, champion (.5 + .25 + 0)/3 = .25
    assert m["candidate"] == pytest.approx(0.5) and m["champion"] == pytest.approx(0.25)
    assert m["diff"] == pytest.approx(0.25) and m["higher_is_better"] is True
    assert m["low"] <= m["diff"] <= m["high"]
    assert out["metrics"]["latency_p95_ms"] == {"candidate": 10.0, "champion": 10.0, "diff": 0.0, "low": 0.0,
                                                "high": 0.0, "higher_is_better": False}


def test_paired_interval_is_tight_for_a_constant_shift():
    """Every example improves by exactly .1: a paired bootstrap gives the point .1, an unpaired one would not."""
    rng = np.random.default_rng(0)
    base = rng.random(100)
    ids = [str(i) for i in range(100)]
    out = compare_models(report(ids, {"rouge_l": (base + 0.1).tolist()}), report(ids, {"rouge_l": base.tolist()}))
    m = out["metrics"]["rouge_l"]
    assert m["low"] == pytest.approx(0.1) and m["high"] == pytest.approx(0.1)


def test_macro_f1_and_perplexity_are_compared():
    labels = {"classification": {"labels": ["neg", "pos"]}}
    ids = ["1", "2", "3", "4"]
    cand = report(ids, {"accuracy": [1.0, 1.0, 1.0, 0.0]}, task="text-classification",
                  predictions=["neg", "pos", "pos", "neg"], references=["neg", "pos", "pos", "pos"]) | labels
    champ = report(ids, {"accuracy": [1.0, 0.0, 0.0, 0.0]}, task="text-classification",
                   predictions=["neg", "neg", "neg", "neg"], references=["neg", "pos", "pos", "pos"]) | labels
    m = compare_models(cand, champ)["metrics"]
    # candidate: neg P=1/2 R=1 F=2/3, pos P=1 R=2/3 F=4/5 -> 11/15; champion: neg F=2/5, pos F=0 -> 1/5
    assert m["macro_f1"]["diff"] == pytest.approx(11 / 15 - 1 / 5)
    assert m["recall/pos"]["diff"] == pytest.approx(2 / 3)
    nll = report(ids, {"nll": [1.0, 1.0, 1.0, 1.0]}, token_counts=[1, 1, 1, 1])
    worse = report(ids, {"nll": [2.0, 2.0, 2.0, 2.0]}, token_counts=[1, 1, 1, 1])
    p = compare_models(nll, worse)["metrics"]["perplexity"]
    assert p["diff"] == pytest.approx(np.e - np.e ** 2) and p["higher_is_better"] is False


@pytest.mark.parametrize("cand,champ,message", [
    (report(["a"], {"token_f1": [1.0]}), report(["b"], {"token_f1": [1.0]}), "share no example ids"),
    (report(["a"], {"token_f1": [1.0]}), report(["a"], {"accuracy": [1.0]}, task="text-classification"),
     "cannot compare a causal-lm report with a text-classification report"),
])
def test_bad_pairs(cand, champ, message):
    with pytest.raises(EvaluationError, match=message):
        compare_models(cand, champ)


def test_verdicts_extremes_and_the_html_report(tmp_path):
    from aicd.components.evaluation.compare import write_comparison
    from aicd.components.evaluation.comparison_report import verdict

    ids = [str(i) for i in range(40)]
    refs = [f"answer {i}" for i in range(40)]
    rng = np.random.default_rng(1)
    champ_f1 = rng.random(40) * 0.5
    cand_f1 = champ_f1 + 0.2
    cand_f1[7], cand_f1[3] = champ_f1[7] - 0.4, champ_f1[3] + 0.45  # one big loss, the biggest gain
    cand = report(ids, {"token_f1": cand_f1.tolist(), "nll": (2.0 + rng.random(40)).tolist()},
                  predictions=[f"cand {i}" for i in ids], references=refs)
    champ = report(ids, {"token_f1": champ_f1.tolist(), "nll": (1.0 + rng.random(40)).tolist()},
                   predictions=[f"champ {i}" for i in ids], references=refs)
    out = compare_models(cand, champ)
    assert verdict("token_f1", out["metrics"]["token_f1"]) == "significantly better"
    assert verdict("nll", out["metrics"]["nll"]) == "significantly worse"  # lower is better, and it rose
    assert verdict("latency_p95_ms", out["metrics"]["latency_p95_ms"]) == "point value (no interval)"
    assert verdict("rouge_l", {"low": -0.1, "high": 0.1, "higher_is_better": True}) == "no significant difference"
    ext = out["extremes"]
    assert ext["metric"] == "token_f1"
    assert ext["gains"][0]["id"] == "3" and ext["gains"][0]["diff"] == pytest.approx(0.45)
    assert ext["losses"] == [pytest.approx(ext["losses"][0])] and ext["losses"][0]["id"] == "7"
    assert ext["losses"][0]["candidate"] == "cand 7" and ext["losses"][0]["champion"] == "champ 7"
    page = write_comparison(out, tmp_path / "comparison.json").with_suffix(".html").read_text()
    assert "significantly worse" in page and "largest gains" in page and "champ 7" in page
