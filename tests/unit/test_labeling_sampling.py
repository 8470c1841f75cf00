"""Random, stratified and uncertainty sampling, and the score formats they read."""

import json
from collections import Counter

import pytest

from aicd.components.errors import LabelingError
from aicd.components.labeling.sampling import load_scores, select


def rows(n, labels=("a", "b", "c"), weights=(0.7, 0.2, 0.1)):
    out, cut = [], [int(w * n) for w in weights]
    for label, count in zip(labels, cut):
        out += [{"id": f"{label}{i}", "label": label} for i in range(count)]
    return out


def test_random_is_seeded_and_stable_as_data_grows():
    base = rows(100)
    first = select(base, 10, "random", seed=1)
    assert select(base, 10, "random", seed=1) == first
    assert select(base, 10, "random", seed=2) != first
    grown = base + [{"id": f"new{i}", "label": "a"} for i in range(20)]
    again = [r["id"] for r in select(grown, 30, "random", seed=1)]
    old_kept = [i for i in again if not i.startswith("new")]
    # new rows slot in without reshuffling: the old rows keep their relative order
    assert old_kept == [r["id"] for r in select(base, len(old_kept), "random", seed=1)]


def test_stratified_is_proportional_with_every_stratum():
    picked = select(rows(100), 10, "stratified", stratify_by="label")
    counts = Counter(r["label"] for r in picked)
    assert len(picked) == 10
    assert counts == {"a": 7, "b": 2, "c": 1}
    tiny = select(rows(100), 3, "stratified", stratify_by="label")
    assert Counter(r["label"] for r in tiny) == {"a": 1, "b": 1, "c": 1}  # rare classes still get one


def test_stratified_asks_more_than_available():
    assert len(select(rows(10), 50, "stratified", stratify_by="label")) == 10


def test_uncertainty_picks_smallest_margins_first():
    data = [{"id": str(i)} for i in range(6)]
    probs = {"0": [0.9, 0.1], "1": [0.51, 0.49], "2": [0.2, 0.8], "3": [0.4, 0.35, 0.25], "4": [0.99, 0.01]}
    picked = [r["id"] for r in select(data, 4, "uncertainty", uncertainty=load_scores(probs))]
    # margins: 1 -> 0.02, 3 -> 0.05, 2 -> 0.6, 0 -> 0.8, 4 -> 0.98; 5 has no score and comes last
    assert picked == ["1", "3", "2", "0"]


def test_uncertainty_from_evaluation_report_and_margins(tmp_path):
    report = {"kind": "evaluation", "examples": {"ids": ["x", "y", "z"], "scores": {"token_f1": [0.9, 0.1, 0.5]}}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    data = [{"id": i} for i in "xyz"]
    assert [r["id"] for r in select(data, 2, "uncertainty", uncertainty=load_scores(path))] == ["y", "z"]
    assert load_scores(tmp_path) == load_scores(path)  # the evaluation folder holding report.json
    report["examples"]["scores"]["nll"] = [0.5, 3.0, 1.0]  # lower is better: high NLL = weak
    path.write_text(json.dumps(report))
    assert [r["id"] for r in select(data, 2, "uncertainty", uncertainty=load_scores(path, "nll"))] == ["y", "z"]
    report["examples"]["scores"]["nll"] = [3.0, 0.5, 1.0]
    path.write_text(json.dumps(report))
    picked = select(data, 1, "uncertainty", uncertainty=load_scores(path, default_metric="nll"))
    assert [r["id"] for r in picked] == ["x"]  # the spec's primary metric when the report has it
    margins = load_scores({"x": 0.3, "y": 0.05})
    assert [r["id"] for r in select(data, 1, "uncertainty", uncertainty=margins)] == ["y"]


@pytest.mark.parametrize("scores, message", [
    ({"x": "high"}, "must be a number (margin) or a list of at least two class probabilities"),
    ({"kind": "evaluation", "examples": {"ids": ["x"], "scores": {}}}, "has no per-example scores"),
    ({"kind": "evaluation", "examples": {"ids": ["x"], "scores": {"f1": [1, 2]}}}, "1 ids but 2 'f1' scores"),
    ("/nonexistent/scores.json", "does not exist"),
])
def test_bad_scores(scores, message):
    with pytest.raises(LabelingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_scores(scores)


def test_uncertainty_without_scores_is_an_error():
    with pytest.raises(LabelingError, match="uncertainty sampling needs model scores"):
        select(rows(10), 3, "uncertainty")
