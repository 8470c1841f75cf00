"""Labeling against a real Label Studio on 127.0.0.1: export, people annotate, import.

Annotations are created through the API with ``completed_by`` set to the annotator's
user id, exactly what the labeling UI posts when that person submits.
"""

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers.ports import free_port
from helpers.specs import sections

from aicd.components.data.format import SPLITS, read_quarantine, read_split, write_dataset
from aicd.components.errors import LabelingError
from aicd.components.labeling.annotations import import_labels
from aicd.components.labeling.client import LabelStudio
from aicd.components.labeling.configs import result_for
from aicd.components.labeling.export import export_for_labeling
from aicd.components.labeling.review import review_candidates, review_wins
from aicd.components.labeling.versions import fingerprint

pytestmark = pytest.mark.e2e


def with_labeling(spec: dict, url: str, **labeling) -> dict:
    spec["labeling"] = {"url": url, **labeling}
    return spec


def make_dataset(path, rows_by_split):
    write_dataset(path, rows_by_split, [], fingerprint=fingerprint(rows_by_split), parent=None,
                  sources=["test"], task="test")
    return json.loads((path / "card.json").read_text())


def sentiment_rows():
    texts = {"negative": "awful pill, bad side effects", "neutral": "it was fine I guess",
             "positive": "worked wonders for me"}
    out = {"train": [], "validation": [], "test": []}
    for i in range(30):
        label = ["negative", "neutral", "positive"][i % 3]
        split = SPLITS[0] if i < 24 else SPLITS[1 + i % 2]
        out[split].append({"id": f"r{i:02d}", "text": f"{texts[label]} #{i}", "label": label, "source": "test"})
    return out


def test_classification_export_annotate_import(ls, label_studio, review_sentiment_spec, tmp_path):  # noqa: F811
    spec = with_labeling(review_sentiment_spec, label_studio.url, project="e2e sentiment", sampling="stratified",
                         batch_size=8, min_annotations=2)
    spec["data"]["quality"]["max_bad_fraction"] = 0.1
    parent = make_dataset(tmp_path / "v1", sentiment_rows())

    first = export_for_labeling(spec, tmp_path / "v1")
    assert (first.created, first.already_in_project, first.kind) == (8, 0, "choices")
    again = export_for_labeling(spec, tmp_path / "v1")  # nothing labeled yet: the queue is full
    assert again.created == 0 and again.already_in_project == 8
    tasks = sorted(ls.tasks(first.project_id), key=lambda t: t["id"])
    assert len(tasks) == 8 and sorted(t["data"]["aicd_id"] for t in tasks) == sorted(first.selected_ids)
    original = {r["id"]: r["label"] for rows in sentiment_rows().values() for r in rows}
    assert sorted(Counter(original[i] for i in first.selected_ids).values()) == [2, 3, 3]  # stratified by label

    admin = ls.create_user("admin@example.com")
    ann = ls.create_user("annotator@example.com", "Ann")
    # overlap on tasks 1-7: 5 agree, 2 disagree; task 8: the annotator picks a label that does not exist
    mine = ["negative", "negative", "neutral", "positive", "positive", "negative", "positive", "neutral"]
    hers = ["negative", "negative", "neutral", "positive", "positive", "positive", "neutral", "postive"]
    for task, a, b in zip(tasks, mine, hers):
        ls.annotate(task["id"], result_for("choices", a), completed_by=admin)
        ls.annotate(task["id"], result_for("choices", b), completed_by=ann)

    result = import_labels(spec, tmp_path / "v1", tmp_path / "v2")
    # hand-computed: p_o = 5/7; mine neg 3, neu 1, pos 3; hers neg 2, neu 2, pos 3
    # p_e = (3*2 + 1*2 + 3*3)/49 = 17/49; kappa = (35/49 - 17/49) / (32/49) = 18/32 = 0.5625
    assert result.agreement["method"] == "cohen_kappa"
    assert result.agreement["value"] == pytest.approx(0.5625, abs=1e-6)
    assert result.agreement["items_with_overlap"] == 7 and result.agreement["annotators"] == 2
    assert (result.labeled, result.adjudication, result.pending, result.invalid_annotations) == (5, 2, 1, 1)
    card = json.loads((tmp_path / "v2" / "card.json").read_text())
    assert card["parent"] == parent["fingerprint"] and card["fingerprint"] == result.fingerprint
    assert sum(card["counts"].values()) == 30 and card["agreement"]["value"] == pytest.approx(0.5625, abs=1e-6)
    assert card["labeling"]["project"] == "e2e sentiment"
    assert card["sources"][-1]["name"] == "label-studio:e2e sentiment"
    rows = {r["id"]: r for s in SPLITS for r in read_split(tmp_path / "v2", s)}
    agreed = [t["data"]["aicd_id"] for t in tasks[:5]]
    assert all(rows[i]["label_source"] == "annotators" and rows[i]["annotations"] == 2 for i in agreed)
    assert [rows[i]["label"] for i in agreed] == mine[:5]
    quarantine = read_quarantine(tmp_path / "v2")
    assert {q["kind"] for q in quarantine} == {"invalid-annotation", "needs-adjudication"}
    assert any("'postive' is not one of task.labels" in q["reason"] for q in quarantine)

    # idempotent: the same state gives the same version
    assert import_labels(spec, tmp_path / "v1", tmp_path / "v2-again").fingerprint == result.fingerprint
    # an adjudicator marks ground truth on a disputed task: the next import picks it up
    ls.annotate(tasks[5]["id"], result_for("choices", "neutral"), completed_by=admin, ground_truth=True)
    third = import_labels(spec, tmp_path / "v1", tmp_path / "v3", previous_dir=tmp_path / "v2")
    assert (third.labeled, third.adjudication, third.new_rows) == (6, 1, 1)  # 1 new since v2
    assert import_labels(spec, tmp_path / "v1", tmp_path / "v4", previous_dir=tmp_path / "v3").new_rows == 0
    assert {r["id"]: r for r in read_split(tmp_path / "v3", "train") + read_split(tmp_path / "v3", "validation")
            + read_split(tmp_path / "v3", "test")}[tasks[5]["data"]["aicd_id"]]["label"] == "neutral"
    # every task now has two annotations (Label Studio counts the unusable one too), so the queue
    # is empty: export tops it up with 8 new rows, never the same row twice
    topped = export_for_labeling(spec, tmp_path / "v1")
    ids = [t["data"]["aicd_id"] for t in ls.tasks(first.project_id)]
    assert topped.created == 8 and len(ids) == len(set(ids)) == 16


def test_pairwise_preferences_with_three_annotators(ls, label_studio, support_bot_spec, tmp_path):  # noqa: F811
    spec = with_labeling(support_bot_spec, label_studio.url, project="e2e pairwise", generation_mode="pairwise",
                         batch_size=4, min_annotations=3)
    rows = [{"id": f"q{i}", "instruction": f"question {i}?", "response": f"reference answer {i}", "source": "t"}
            for i in range(6)]
    make_dataset(tmp_path / "v1", {"train": rows})
    model = {f"q{i}": f"model answer {i}" for i in range(6)}
    with pytest.raises(LabelingError, match="no model responses were given"):
        export_for_labeling(spec, tmp_path / "v1")
    out = export_for_labeling(spec, tmp_path / "v1", responses=model)
    tasks = sorted(ls.tasks(out.project_id), key=lambda t: t["id"])
    assert out.created == 4 and len(tasks) == 4
    people = [ls.create_user(f"rater{i}@example.com") for i in range(3)]
    picks = [("left",) * 3, ("right", "right", "left"), ("left", "right", "right"), ("right",) * 3]
    for task, chosen in zip(tasks, picks):
        for who, side in zip(people, chosen):
            ls.annotate(task["id"], result_for("pairwise", side), completed_by=who)

    result = import_labels(spec, tmp_path / "v1", tmp_path / "v2")
    # coincidences: o_LL = 3, o_RR = 1 + 1 + 3, o_LR = o_RL = 2; n_L = 5, n_R = 7, n = 12
    # D_o = 4/12; D_e = 2*5*7/(12*11); alpha = 1 - (1/3)/(70/132) = 13/35
    assert result.agreement["method"] == "krippendorff_alpha"
    assert result.agreement["value"] == pytest.approx(13 / 35, abs=1e-6)
    assert result.labeled == 4 and result.new_rows == 4
    got = {r["id"]: r for r in read_split(tmp_path / "v2", "train")}
    for task, chosen in zip(tasks, picks):
        side = max(set(chosen), key=chosen.count)
        other = "right" if side == "left" else "left"
        row = got[task["data"]["aicd_id"]]
        assert (row["prompt"], row["chosen"], row["rejected"]) == (
            task["data"]["prompt"], task["data"][side], task["data"][other])
        assert row["response"] == row["chosen"] and row["chosen_from"] == task["data"][f"aicd_{side}"]
    assert {got[i]["rejected"] for i in got if i not in [t["data"]["aicd_id"] for t in tasks]} == {None}


def test_rating_responses(ls, label_studio, support_bot_spec, tmp_path):  # noqa: F811
    spec = with_labeling(support_bot_spec, label_studio.url, project="e2e rating", generation_mode="rating",
                         batch_size=3, min_annotations=2)
    rows = [{"id": f"q{i}", "instruction": f"question {i}?", "response": f"answer {i}", "source": "t"}
            for i in range(5)]
    make_dataset(tmp_path / "v1", {"train": rows})
    out = export_for_labeling(spec, tmp_path / "v1")
    tasks = sorted(ls.tasks(out.project_id), key=lambda t: t["id"])
    assert out.kind == "rating" and len(tasks) == 3
    people = [ls.create_user(f"judge{i}@example.com") for i in range(2)]
    for task, (a, b) in zip(tasks, [(5, 5), (2, 2), (4, 3)]):
        ls.annotate(task["id"], result_for("rating", a), completed_by=people[0])
        ls.annotate(task["id"], result_for("rating", b), completed_by=people[1])
    result = import_labels(spec, tmp_path / "v1", tmp_path / "v2")
    assert (result.labeled, result.adjudication) == (2, 1)  # 4 vs 3 is a tie: left for a person
    # ratings as nominal categories: p_o = 2/3, p_e = (1*1 + 1*1)/9 = 2/9, kappa = (4/9)/(7/9) = 4/7
    assert result.agreement["value"] == pytest.approx(4 / 7, abs=1e-6)
    kept = {r["id"]: r for r in read_split(tmp_path / "v2", "train")}
    first, second, third = (t["data"]["aicd_id"] for t in tasks)
    assert kept[first]["rating"] == 5 and second not in kept and kept[third]["rating"] is None
    low = [q for q in read_quarantine(tmp_path / "v2") if q["kind"] == "low-rating"]
    assert [q["id"] for q in low] == [second] and "rated the response 2/5" in low[0]["reason"]
    assert len(kept) == 4


def test_candidate_review_side_by_side(ls, label_studio, support_bot_spec, tmp_path):  # noqa: F811
    spec = with_labeling(support_bot_spec, label_studio.url, project="e2e review")
    prompts = ["What is AI?", "Do you like <b>sports</b>?"]
    outputs = {"smollm2": ["Machines that think.", "Yes!"], "tiny": ["AI AI AI", "no"]}
    result = review_candidates(spec, prompts, outputs, tmp_path / "review", references=["Thinking machines.", "I do."])
    assert (result.tasks_created, result.tasks_total) == (6, 6)  # 2 prompts x 3 pairs
    page = (tmp_path / "review" / "review.html").read_text()
    assert "Do you like &lt;b&gt;sports&lt;/b&gt;?" in page and "<th>reference</th>" in page
    again = review_candidates(spec, prompts, outputs, tmp_path / "review", references=["Thinking machines.", "I do."])
    assert again.tasks_created == 0
    tasks = ls.tasks(result.project_id)
    assert len(tasks) == 6
    for task in tasks:  # a reviewer always prefers smollm2, and the reference over tiny
        data = task["data"]
        names = (data["aicd_left"], data["aicd_right"])
        best = "smollm2" if "smollm2" in names else "reference"
        ls.annotate(task["id"], result_for("pairwise", "left" if names[0] == best else "right"))
    assert review_wins(spec) == {"smollm2": 4, "reference": 2}


def test_errors_are_clear(ls, label_studio, review_sentiment_spec, tmp_path, monkeypatch):  # noqa: F811
    with pytest.raises(LabelingError, match=r"refused the API token \(HTTP 401"):
        LabelStudio(label_studio.url, "0" * 40).find_project("anything")
    project = ls.get_or_create_project("e2e deleted", "<View><Text name='text' value='$text'/></View>")
    ls.delete_project(project["id"])
    with pytest.raises(LabelingError, match=r"(?s)project \d+ was not found .*HTTP 404 .*HTML page.*probably deleted"):
        ls.import_tasks(project["id"], [{"data": {"text": "x"}}])
    with pytest.raises(LabelingError, match=r"(?s)project \d+ was not found .*HTTP 404 .*probably deleted"):
        ls.export(project["id"])
    spec = with_labeling(review_sentiment_spec, label_studio.url, project="e2e never exported")
    make_dataset(tmp_path / "v1", sentiment_rows())
    with pytest.raises(LabelingError, match="(?s)has no project titled 'e2e never exported'.*run export_for_labeling"):
        import_labels(spec, tmp_path / "v1", tmp_path / "v2")
    assert not (tmp_path / "v2").exists()
    spec = with_labeling(review_sentiment_spec, label_studio.url, project="e2e wrong token")
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", "f" * 40)  # the Secret holds a stale token
    with pytest.raises(LabelingError, match=r"(?s)refused the API token \(HTTP 401.*labeling.token_secret"):
        export_for_labeling(spec, tmp_path / "v1")

    spec = with_labeling(review_sentiment_spec, f"http://127.0.0.1:{free_port()}", project="e2e unreachable")
    with pytest.raises(LabelingError, match=r"Label Studio at http://127.0.0.1:\d+ is unreachable"):
        export_for_labeling(spec, tmp_path / "v1")
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.token)
    with pytest.raises(LabelingError, match="uncertainty but no model scores"):
        export_for_labeling(with_labeling(review_sentiment_spec, label_studio.url, project="e2e unc",
                                          sampling="uncertainty"), tmp_path / "v1")


def test_steps_under_kfp_local(ls, label_studio, review_sentiment_spec, tmp_path):  # noqa: F811
    """The KFP components run as pipeline steps (kfp.local, this environment) against the server."""
    from kfp import dsl, local
    from kfp.dsl import Dataset

    from aicd.components.labeling import steps

    spec = with_labeling(review_sentiment_spec, label_studio.url, project="e2e kfp steps", sampling="random",
                         batch_size=3)
    make_dataset(tmp_path / "v1", sentiment_rows())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def export_pipeline(name: str, task: dict, candidates: list, metrics: dict, labeling: dict, uri: str) -> int:
        data = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False)
        return steps.export_for_labeling(name=name, task=task, candidates=candidates, metrics=metrics,
                                         labeling=labeling, dataset=data.output).outputs["Output"]

    @dsl.pipeline
    def import_pipeline(name: str, task: dict, data: dict, labeling: dict, uri: str) -> Dataset:
        dataset = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False)
        return steps.import_labels(name=name, task=task, data=data, labeling=labeling,
                                   dataset=dataset.output).outputs["labeled"]

    assert export_pipeline(**sections(spec, "name", "task", "candidates", "metrics", "labeling"),
                           uri=str(tmp_path / "v1")).output == 3
    project = ls.find_project("e2e kfp steps")
    original = {r["id"]: r["label"] for rows in sentiment_rows().values() for r in rows}
    changed = 0
    for task in ls.tasks(project["id"]):
        ls.annotate(task["id"], result_for("choices", "neutral"))
        changed += original[task["data"]["aicd_id"]] != "neutral"
    labeled = import_pipeline(**sections(spec, "name", "task", "data", "labeling"), uri=str(tmp_path / "v1")).output
    card = json.loads((Path(labeled.path) / "card.json").read_text())
    assert card["labeling"]["labeled"] == 3
    assert card["label_distribution"]["neutral"] == 10 + changed  # 10 of the 30 rows were neutral before
