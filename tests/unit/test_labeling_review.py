"""Stage 1 review inputs and the side-by-side HTML (the Label Studio part runs in e2e)."""

import json

import pytest

from aicd.components.data.format import write_dataset
from aicd.components.errors import AicdError, LabelingError
from aicd.components.labeling.review import (
    labeling_inputs,
    leaderboard_reports,
    outputs_from_reports,
    pairwise_tasks,
    render_html,
    review_candidates,
    review_leaderboard,
)
from aicd.components.labeling.sampling import load_scores, select
from aicd.components.labeling.versions import read_version


def report(ids, predictions):
    return {"kind": "evaluation", "examples": {"ids": ids, "predictions": predictions, "scores": {}}}


def test_outputs_from_reports(tmp_path, support_bot_spec):
    rows = [{"id": f"q{i}", "instruction": f"question {i}", "response": f"answer {i}", "source": "t"} for i in range(4)]
    write_dataset(tmp_path / "data", {"train": rows[:3], "test": rows[3:]}, [], fingerprint="sha256:x", parent=None)
    (tmp_path / "a.json").write_text(json.dumps(report(["q3", "q1", "q0"], ["a3", "a1", "a0"])))
    (tmp_path / "b.json").write_text(json.dumps(report(["q0", "q3", "zz"], ["b0", "b3", "bz"])))
    got = outputs_from_reports(support_bot_spec, tmp_path / "data",
                               {"a": tmp_path / "a.json", "b": tmp_path / "b.json"})
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


def eval_report(ids, predictions, split="validation", scores=None):
    return {"kind": "evaluation", "split": split,
            "examples": {"ids": ids, "predictions": predictions, "scores": scores or {}}}


@pytest.fixture
def qa_data(tmp_path):
    rows = [{"id": f"q{i}", "instruction": f"question {i}", "response": f"answer {i}", "source": "t"} for i in range(6)]
    write_dataset(tmp_path / "data", {"train": rows[:4], "validation": rows[4:]}, [], fingerprint="sha256:x",
                  parent=None)
    return tmp_path / "data"


def write_board(tmp_path, entries):
    folder = tmp_path / "leaderboard"
    folder.mkdir()
    (folder / "leaderboard.json").write_text(json.dumps({"kind": "leaderboard", "entries": entries}))
    return folder


def test_review_from_the_leaderboard(tmp_path, support_bot_spec, qa_data, caplog):
    for name, preds in (("a", ["a4", "a5"]), ("b", ["b4", "b5"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(eval_report(["q4", "q5"], preds)))
    (tmp_path / "c.json").write_text(json.dumps(eval_report([], [])))  # kept no predictions
    board = write_board(tmp_path, [{"name": "a/zero-shot", "report": str(tmp_path / "a" / "report.json")},
                                   {"name": "b/few-shot-2", "report": str(tmp_path / "b")},
                                   {"name": "c/zero-shot", "report": str(tmp_path / "c.json")},
                                   {"name": "no-report"}])
    with caplog.at_level("INFO"):
        reports = leaderboard_reports(board)
    assert set(reports) == {"a/zero-shot", "b/few-shot-2"}
    assert "'c/zero-shot' kept no per-example predictions" in caplog.text
    result = review_leaderboard(support_bot_spec, qa_data, board, tmp_path / "out", push=False)
    page = (tmp_path / "out" / "review.html").read_text()
    assert result.tasks_total == 6 and result.project_id is None  # 2 prompts x 3 pairs, nothing pushed
    for cell in ("<th>a/zero-shot</th>", "<th>b/few-shot-2</th>", "<th>reference</th>", "question 5", "b4"):
        assert cell in page


def test_leaderboard_reports_relative_to_the_leaderboard_folder(tmp_path, monkeypatch):
    """select_candidate copies the entries' reports into the leaderboard artifact: they are read from
    there, wherever the folder is and whatever the working directory."""
    board = write_board(tmp_path, [{"name": "a/zero-shot", "report": "reports/00-a/report.json"}])
    (board / "reports" / "00-a").mkdir(parents=True)
    (board / "reports" / "00-a" / "report.json").write_text(json.dumps(eval_report(["q4"], ["a4"])))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert leaderboard_reports(board) == {"a/zero-shot": board / "reports" / "00-a" / "report.json"}
    assert leaderboard_reports(board / "leaderboard.json") == leaderboard_reports(board)


def test_classification_review_stays_in_html(tmp_path, review_sentiment_spec, caplog):
    rows = [{"id": f"r{i}", "text": f"text {i}", "label": "negative", "source": "t"} for i in range(3)]
    write_dataset(tmp_path / "data", {"validation": rows}, [], fingerprint="sha256:x", parent=None)
    (tmp_path / "p.json").write_text(json.dumps(eval_report(["r0", "r1"], ["positive", "negative"])))
    board = write_board(tmp_path, [{"name": "enc/linear-probe", "report": str(tmp_path / "p.json")}])
    with caplog.at_level("INFO"):  # push asked, but no client is needed: nothing goes to Label Studio
        result = review_leaderboard(review_sentiment_spec, tmp_path / "data", board, tmp_path / "out")
    assert result.tasks_created == 0 and result.project_id is None
    assert "no Pairwise tasks to Label Studio" in caplog.text
    assert "<th>enc/linear-probe</th>" in (tmp_path / "out" / "review.html").read_text()


@pytest.mark.parametrize("content, message", [
    ("not json", "cannot be read as JSON"),
    ('{"kind": "evaluation"}', "has no `entries`"),
    ('{"kind": "leaderboard", "entries": [{"name": "x", "report": "/nowhere/report.json"}]}',
     "report /nowhere/report.json of leaderboard entry 'x' cannot be found"),
    ('{"kind": "leaderboard", "entries": []}', "no leaderboard entry kept per-example predictions"),
])
def test_bad_leaderboard(tmp_path, support_bot_spec, qa_data, content, message):
    (tmp_path / "leaderboard.json").write_text(content)
    with pytest.raises(AicdError, match=message):
        review_leaderboard(support_bot_spec, qa_data, tmp_path / "leaderboard.json", tmp_path / "out", push=False)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_labeling_inputs_pairwise_takes_the_answers(tmp_path, support_bot_spec, qa_data):
    (tmp_path / "eval").mkdir()
    got = labeling_inputs(support_bot_spec, qa_data, tmp_path / "work", tmp_path / "eval")
    assert got == {"dataset_dir": str(qa_data), "responses": str(tmp_path / "eval" / "report.json")}
    spec = {**support_bot_spec, "labeling": {**support_bot_spec["labeling"], "generation_mode": "rating"}}
    assert labeling_inputs(spec, qa_data, tmp_path / "work", tmp_path / "eval") == {"dataset_dir": str(qa_data)}


def test_labeling_inputs_uncertainty_prefers_the_chosen_model(tmp_path, review_sentiment_spec, qa_data):
    (tmp_path / "probe").mkdir()
    chosen = json.dumps({"name": "enc/linear-probe", "model_dir": str(tmp_path / "probe")})
    got = labeling_inputs(review_sentiment_spec, qa_data, tmp_path / "work", tmp_path / "eval", chosen)
    assert got == {"dataset_dir": str(qa_data), "model_dir": str(tmp_path / "probe")}


def test_labeling_inputs_uncertainty_takes_the_chosen_model_input(tmp_path, review_sentiment_spec, qa_data):
    """On a cluster the chosen model arrives as the step's own input; a base-model reference is not a model."""
    (tmp_path / "input").mkdir()
    (tmp_path / "probe").mkdir()
    chosen = json.dumps({"name": "enc/linear-probe", "model_dir": str(tmp_path / "probe")})
    got = labeling_inputs(review_sentiment_spec, qa_data, tmp_path / "work", None, chosen, tmp_path / "input")
    assert got["model_dir"] == str(tmp_path / "input")
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "base-model.json").write_text(json.dumps({"candidate": "enc"}))
    got = labeling_inputs(review_sentiment_spec, qa_data, tmp_path / "work", None, chosen, tmp_path / "ref")
    assert got["model_dir"] == str(tmp_path / "probe")


def test_labeling_inputs_uncertainty_samples_only_scored_rows(tmp_path, support_bot_spec, qa_data):
    spec = {**support_bot_spec, "labeling": {**support_bot_spec["labeling"], "generation_mode": "rating",
                                             "sampling": "uncertainty"}}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "report.json").write_text(json.dumps(
        eval_report(["q1", "q4"], ["x", "y"], scores={"token_f1": [0.1, 0.9]})))
    chosen = json.dumps({"name": "m/zero-shot", "model_dir": None})
    got = labeling_inputs(spec, qa_data, tmp_path / "work", tmp_path / "eval", chosen)
    assert got["scores"] == str(tmp_path / "eval" / "report.json")
    _, splits = read_version(got["dataset_dir"])
    assert sorted(r["id"] for part in splits.values() for r in part) == ["q1", "q4"]
    assert [r["id"] for r in select([r for p in splits.values() for r in p], 5, "uncertainty", 0, None,
                                    load_scores(got["scores"], default_metric="token_f1"))] == ["q1", "q4"]


@pytest.mark.parametrize("chosen", ["not json", "[1, 2]"])
def test_labeling_inputs_bad_chosen(tmp_path, review_sentiment_spec, qa_data, chosen):
    with pytest.raises(LabelingError, match="`chosen` is not select_candidate's JSON object"):
        labeling_inputs(review_sentiment_spec, qa_data, tmp_path / "work", None, chosen)
