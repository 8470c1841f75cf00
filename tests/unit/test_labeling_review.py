"""Stage 1 review inputs and the side-by-side HTML (the Label Studio part runs in e2e)."""

import json

import pytest

from aicd.components.data.format import write_dataset
from aicd.components.errors import LabelingError
from aicd.components.labeling.review import outputs_from_reports, pairwise_tasks, render_html, review_candidates


def report(ids, predictions):
    return {"kind": "evaluation", "examples": {"ids": ids, "predictions": predictions, "scores": {}}}


def test_outputs_from_reports(tmp_path, support_bot_spec):
    rows = [{"id": f"q{i}", "instruction": f"question {i}", "response": f"answer {i}", "source": "t"} for i in range(4)]
    write_dataset(tmp_path / "data", {"train": rows[:3], "test": rows[3:]}, [], fingerprint="sha256:x", parent=None)
    (tmp_path / "a.json").write_text(json.dumps(report(["q3", "q1", "q0"], ["a3", "a1", "a0"])))
    (tmp_path / "b.json").write_text(json.dumps(report(["q0", "q3", "zz"], ["b0", "b3", "bz"])))
    got = outputs_from_reports(support_bot_spec, tmp_path / "data", {"a": tmp_path / "a.json", "b": tmp_path / "b.json"})
    assert got == {"prompts": ["question 3", "question 0"], "outputs": {"a": ["a3", "a0"], "b": ["b3", "b0"]},
                   "references": ["answer 3", "answer 0"]}


def test_pairwise_tasks_cover_every_pair_with_stable_ids():
    outputs = {"a": ["a1", "a2"], "b": ["b1", "b2"], "c": ["c1", "c2"]}
    tasks = pairwise_tasks(["p1", "p2"], outputs)
    assert len(tasks) == 6 and len({t["data"]["aicd_id"] for t in tasks}) == 6
    assert tasks == pairwise_tasks(["p1", "p2"], outputs)
    sides = {(t["data"]["aicd_left"], t["data"]["aicd_right"]) for t in tasks}
    assert any(left > right for left, right in sides) and any(left < right for left, right in sides)  # no fixed side
    for t in tasks:
        d = t["data"]
        assert d["left"] == outputs[d["aicd_left"]][int(d["prompt"][1]) - 1]


def test_html_escapes_outputs():
    page = render_html("r", ["<script>x</script>"], {"m1": ["a & b"], "m2": ["ok"]})
    assert "&lt;script&gt;" in page and "a &amp; b" in page and "<script>" not in page


@pytest.mark.parametrize("prompts, outputs, message", [
    ([], {"a": [], "b": []}, "no sample prompts to review"),
    (["p"], {"a": ["x", "y"], "b": ["z"]}, "candidate 'a' has 2 outputs for 1 prompts"),
    (["p"], {"a": ["x"]}, "a side-by-side review needs two candidates, got 1"),
])
def test_bad_review_input(tmp_path, support_bot_spec, prompts, outputs, message):
    with pytest.raises(LabelingError, match=message):
        review_candidates(support_bot_spec, prompts, outputs, tmp_path / "out", push=False)
    assert not (tmp_path / "out").exists()


def test_review_without_label_studio(tmp_path, support_bot_spec):
    result = review_candidates(support_bot_spec, ["p"], {"a": ["x"]}, tmp_path / "out", references=["r"], push=False)
    assert result.project_id is None and result.tasks_total == 1
    assert "<th>reference</th>" in (tmp_path / "out" / "review.html").read_text()
