"""The continuous pipeline end to end under kfp.local, against a real Label Studio and a payload log.

Real parts: Label Studio on 127.0.0.1 (the session fixture; people's annotations are created
through its API as the labeling UI posts them), kfp.local steps, the tiny random Llama, a bare
GitOps repository. The payload log is written in the documented format (docs/contracts.md),
exactly what the predictor writes (tests/e2e/test_labeling_feedback_predictor.py starts one).

The training and delivery part is being reworked elsewhere, so these tests assert behaviour
(which steps ran, what the check decided, what landed in Git, row counts), not its task names.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tiny_models import tiny_finetune_spec

from aicd.components.data.ingest import ingest_dataset
from aicd.components.labeling.client import LabelStudio
from aicd.components.labeling.configs import result_for
from aicd.components.labeling.export import export_for_labeling
from aicd.components.labeling.versions import read_version
from aicd.components.spec import parse_spec
from aicd.pipelines.cache import source_digest
from aicd.pipelines.gitops import head_commit
from aicd.pipelines.local import PipelineRunError, run_local
from aicd.pipelines.stages import build_pipeline, pipeline_arguments

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# The tasks before the dsl.If: they run on every recurring run.
BEFORE_CHECK = {"fingerprint-sources", "ingest-dataset", "profile-dataset", "previous-versions", "import-labels",
                "collect-feedback", "count-new-pairs", "check-new-data"}


def make_spec(support_bot_spec: dict, tiny_causal_lm: Path, tmp_path: Path, url: str, project: str,
              min_new_rows: int) -> dict:
    """The support-bot spec on the tiny model: a short run, permissive gates, pairwise labeling."""
    spec = tiny_finetune_spec(support_bot_spec, tiny_causal_lm, tmp_path, ROOT / "manifests")
    spec["labeling"].update(url=url, project=project, batch_size=6, min_annotations=1,
                            retrain_min_new_rows=min_new_rows)
    return pipeline_arguments(parse_spec(spec))


def open_tasks(ls: LabelStudio, spec: dict, tmp_path: Path) -> list[dict]:
    """The tasks people label: rows of the data set the pipeline ingests, with the model's answers."""
    ingest_dataset(spec, tmp_path / "v1")
    _, splits = read_version(tmp_path / "v1")
    answers = {str(r["id"]): f"model answer to {r['instruction']}" for rows in splits.values() for r in rows}
    exported = export_for_labeling(spec, tmp_path / "v1", responses=answers)
    return sorted(ls.tasks(exported.project_id), key=lambda t: t["id"])


def annotate(ls: LabelStudio, tasks: list[dict], side: str = "left") -> None:
    who = ls.create_user("rater@example.com")
    for task in tasks:
        ls.annotate(task["id"], result_for("pairwise", side), completed_by=who)


def chat_record(rid: str, prompt: str, answer: str) -> dict:
    return {"type": "request", "id": rid, "time": f"2026-11-28T10:00:{len(rid):02d}Z", "adapter": "support-bot",
            "endpoint": "/openai/v1/chat/completions", "latency_ms": 12.3,
            "request": {"model": "support-bot", "messages": [{"role": "user", "content": prompt}]},
            "response": {"id": rid, "object": "chat.completion",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                      "finish_reason": "stop"}]}}


def append_log(log_dir: Path, exchanges: list[tuple[str, str, str, str, str | None]],
               feedback_dir: Path | None = None) -> None:
    """(id, prompt, answer, rating, correction) exchanges appended to payloads.jsonl as the predictor does;
    the feedback to ``feedback_dir`` when given (another pod answered the feedback request)."""
    for folder in (log_dir, feedback_dir or log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "payloads.jsonl", "a", encoding="utf-8") as requests, \
            open((feedback_dir or log_dir) / "payloads.jsonl", "a", encoding="utf-8") as feedback:
        for rid, prompt, answer, rating, correction in exchanges:
            requests.write(json.dumps(chat_record(rid, prompt, answer)) + "\n")
            requests.flush()
            feedback.write(json.dumps({"type": "feedback", "id": rid, "time": "2026-11-28T10:01:00Z",
                                       "rating": rating, "correction": correction}) + "\n")


def run(spec: dict, work: Path, code: str, **params):
    return run_local(build_pipeline("continuous"), {**spec, **params}, work, code_digest=code)


def git_log(repo: str) -> list[str]:
    return subprocess.run(["git", "--git-dir", repo, "log", "--format=%H", "main"], capture_output=True, text=True,
                          check=True).stdout.split()


def check_of(result) -> tuple[bool, str]:
    task = result.task("check-new-data")
    return task.outputs["Output"], task.outputs["reason"]


def test_too_little_new_data_skips_training(ls, label_studio, support_bot_spec, tiny_causal_lm,  # noqa: F811
                                            tmp_path):
    spec = make_spec(support_bot_spec, tiny_causal_lm, tmp_path, label_studio.url, "continuous-few",
                     min_new_rows=5)
    annotate(ls, open_tasks(ls, spec, tmp_path)[:2])
    append_log(tmp_path / "logs", [("r1", "How do I reset my password?", "Click forgot password.", "up", None)])
    repo = spec["delivery"]["gitops"]["repo"]
    before = git_log(repo)

    result = run(spec, tmp_path / "work", source_digest(), feedback_log=str(tmp_path / "logs"),
                 state_uri=str(tmp_path / "state"))

    assert {t.name for t in result.tasks} == BEFORE_CHECK, [t.name for t in result.tasks]
    assert all(t.status == "ran" for t in result.tasks)
    assert result.task("import-labels").outputs["Output"] == 2
    assert result.task("collect-feedback").outputs["Output"] == 1
    assert check_of(result) == (False, "3 new row(s) (2 labeled + 1 feedback) < labeling.retrain_min_new_rows=5")
    assert git_log(repo) == before
    assert not (tmp_path / "state").exists()  # nothing trained: the next run counts these rows again


def test_enough_new_data_trains_promotes_and_next_runs_count_only_new_rows(
        ls, label_studio, support_bot_spec, tiny_causal_lm, tmp_path, monkeypatch):  # noqa: F811
    spec = make_spec(support_bot_spec, tiny_causal_lm, tmp_path, label_studio.url, "continuous-enough",
                     min_new_rows=4)
    tasks = open_tasks(ls, spec, tmp_path)
    annotate(ls, tasks[:3])
    # The predictor pods' payload-logs claim as the profile mounts it: one sub-folder per pod.
    pvc = tmp_path / "pvc"
    logs = pvc / "aicd-payload-logs"
    monkeypatch.setenv("AICD_PVC_ROOT", str(pvc))
    append_log(logs / "predictor-a", [("r1", "How do I reset my password?", "Click forgot password.", "up", None),
                                      ("r2", "Do you ship abroad?", "No.", "down", "Yes, to most countries.")])
    append_log(logs / "predictor-b", [("r3", "Are you a robot?", "Maybe.", "down", None)])  # no training target
    repo = spec["delivery"]["gitops"]["repo"]
    before = git_log(repo)
    code = source_digest()

    # As the recurring run submits it: the spec only (payload log and state on the claim by default).
    first = run(spec, tmp_path / "work", code)
    names = {t.name for t in first.tasks}
    assert BEFORE_CHECK < names and all(t.status == "ran" for t in first.tasks), names
    assert (first.task("import-labels").outputs["Output"], first.task("collect-feedback").outputs["Output"]) == (3, 2)
    assert check_of(first) == (True, "5 new row(s) (3 labeled + 2 feedback) >= labeling.retrain_min_new_rows=4")
    # trained on the labeled version with the feedback rows added
    labeled = first.artifact_path("import-labels", "labeled")
    data_card, splits = read_version(first.artifact_path("merge-training-data", "dataset"))
    assert data_card["parent"] == read_version(labeled)[0]["fingerprint"]
    rows = [r for rows in splits.values() for r in rows]
    people = [r for r in rows if r.get("label_source") == "annotators"]
    assert len(people) == 3 and all(r["response"] == r["chosen"] for r in people)
    assert sorted((r["id"], r["response"]) for r in rows if str(r.get("source")).startswith("feedback")) == [
        ("r1", "Click forgot password."), ("r2", "Yes, to most countries.")]
    trained = [t for t in first.tasks if t.name.startswith("train-")]
    assert trained, names
    model_card = json.loads((Path(trained[0].outputs["model"].path) / "card.json").read_text())
    assert data_card["fingerprint"] in json.dumps(model_card)
    gate = next(t for t in first.tasks if t.name.startswith("gate-"))
    assert gate.outputs["Output"] is True, gate.outputs["blessing"].metadata
    sha, _ = head_commit(repo, "main")
    assert sha not in before and len(git_log(repo)) == len(before) + 1
    overlay = subprocess.run(["git", "--git-dir", repo, "show",
                              "main:manifests/overlays/production/inferenceservice.yaml"],
                             capture_output=True, text=True, check=True).stdout
    assert gate.outputs["digest"].split(":")[1][:12] in overlay
    state = logs / ".aicd-continuous" / "trained"
    recorded = json.loads((state / "trained.json").read_text())
    assert recorded == {"labels": read_version(labeled)[0]["fingerprint"], "model": gate.outputs["digest"],
                        "feedback": read_version(first.artifact_path("collect-feedback", "feedback"))[0][
                            "fingerprint"], "base_model": spec["candidates"][0]["uri"]}

    # One more annotation and one more accepted answer (its feedback reached the other pod) arrive;
    # the next recurring run counts only those, from the versions the first run trained on.
    annotate(ls, tasks[3:4])
    append_log(logs / "predictor-b", [("r4", "What are your opening hours?", "9 to 5.", "up", None)],
               feedback_dir=logs / "predictor-a")
    second = run(spec, tmp_path / "work", code)
    assert {t.name for t in second.tasks} == BEFORE_CHECK, [t.name for t in second.tasks]
    assert (second.task("import-labels").outputs["Output"], second.task("collect-feedback").outputs["Output"]) \
        == (1, 1)
    assert check_of(second) == (False, "2 new row(s) (1 labeled + 1 feedback) < labeling.retrain_min_new_rows=4")
    assert head_commit(repo, "main")[0] == sha and json.loads((state / "trained.json").read_text()) == recorded
    feedback_card, feedback_splits = read_version(second.artifact_path("collect-feedback", "feedback"))
    assert sorted(r["id"] for rows in feedback_splits.values() for r in rows) == ["r1", "r2", "r4"]
    assert feedback_card["parent"] == recorded["feedback"]

    # The previous versions given as a user would: a path, and a pvc:// URI of the claim they were
    # copied to; without state the same two rows are new, with neither every row is.
    shutil.copytree(first.artifact_path("collect-feedback", "feedback"), pvc / "aicd-data" / "feedback-v1")
    third = run(spec, tmp_path / "work", code, previous_labels=str(labeled),
                previous_feedback="pvc://aicd-data/feedback-v1", state_uri="")
    assert check_of(third) == (False, "2 new row(s) (1 labeled + 1 feedback) < labeling.retrain_min_new_rows=4")
    assert head_commit(repo, "main")[0] == sha


def test_bad_previous_and_state_uris_fail_clearly(ls, label_studio, support_bot_spec, tiny_causal_lm,  # noqa: F811
                                                 tmp_path, monkeypatch):
    spec = make_spec(support_bot_spec, tiny_causal_lm, tmp_path, label_studio.url, "continuous-bad",
                     min_new_rows=1)
    append_log(tmp_path / "logs", [("r1", "Hello?", "Hi!", "up", None)])
    repo = spec["delivery"]["gitops"]["repo"]
    before = git_log(repo)
    monkeypatch.setenv("AICD_PVC_ROOT", str(tmp_path / "pvc"))
    code = source_digest()
    with pytest.raises(PipelineRunError, match=r"s3://bucket/state.*keeps its state on a volume"):
        run(spec, tmp_path / "work", code, feedback_log=str(tmp_path / "logs"), state_uri="s3://bucket/state")
    with pytest.raises(PipelineRunError, match=r"pvc://aicd-data/labels-v1.* is not mounted"):
        run(spec, tmp_path / "work", code, feedback_log=str(tmp_path / "logs"),
            previous_labels="pvc://aicd-data/labels-v1", state_uri="")
    assert git_log(repo) == before
