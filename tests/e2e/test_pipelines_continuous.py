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

from aicd.components.data.ingest import ingest_dataset
from aicd.components.labeling.client import LabelStudio
from aicd.components.labeling.configs import result_for
from aicd.components.labeling.export import export_for_labeling
from aicd.components.labeling.versions import read_version
from aicd.components.spec import parse_spec
from aicd.pipelines.cache import source_digest
from aicd.pipelines.gitops import ensure_gitops_repo, head_commit
from aicd.pipelines.local import run_local
from aicd.pipelines.stages import build_pipeline, pipeline_argument
from labelstudio_server import label_studio  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# The tasks before the dsl.If: they run on every recurring run.
BEFORE_CHECK = {"ingest-dataset", "profile-dataset", "import-labels", "collect-feedback", "check-new-data"}


@pytest.fixture
def ls(label_studio, monkeypatch):  # noqa: F811
    # The steps run as subprocesses of this process: they read the token from the environment.
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.token)
    client = LabelStudio(label_studio.url, label_studio.token)
    yield client
    client.close()


def make_spec(support_bot_spec: dict, tiny_causal_lm: Path, tmp_path: Path, url: str, project: str,
              min_new_rows: int) -> dict:
    """The support-bot spec on the tiny model: a short run, permissive gates, pairwise labeling."""
    spec = support_bot_spec
    spec["candidates"] = [{"name": "tiny-llama", "uri": str(tiny_causal_lm)}]
    spec["data"]["max_rows"] = 60
    spec["training"].update(max_steps=2, batch_size=4, checkpoint={"every_steps": 1, "root": str(tmp_path / "ckpt")},
                            methods=[{"name": "lora-r4", "method": "lora", "r": 4, "alpha": 8,
                                      "target_modules": ["q_proj", "v_proj"]}])
    spec["metrics"].update(max_examples=8, bootstrap_samples=50, max_new_tokens=4, behavioural=[],
                           probe_prompts=[], gates={"thresholds": {}, "non_inferiority": {"token_f1": 1.0}})
    repo = tmp_path / "gitops.git"
    ensure_gitops_repo(repo, "main", ROOT / "manifests")
    spec["delivery"]["gitops"]["repo"] = str(repo)
    spec["labeling"].update(url=url, project=project, batch_size=6, min_annotations=1,
                            retrain_min_new_rows=min_new_rows)
    return pipeline_argument(parse_spec(spec))


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


def append_log(log_dir: Path, exchanges: list[tuple[str, str, str, str, str | None]]) -> None:
    """(id, prompt, answer, rating, correction) exchanges appended to payloads.jsonl as the predictor does."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "payloads.jsonl", "a", encoding="utf-8") as fh:
        for rid, prompt, answer, rating, correction in exchanges:
            fh.write(json.dumps(chat_record(rid, prompt, answer)) + "\n")
            fh.write(json.dumps({"type": "feedback", "id": rid, "time": "2026-11-28T10:01:00Z", "rating": rating,
                                 "correction": correction}) + "\n")


def run(spec: dict, work: Path, code: str, **params):
    return run_local(build_pipeline("continuous"), {"spec": spec, **params}, work, code_digest=code)


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

    result = run(spec, tmp_path / "work", source_digest(), feedback_log=str(tmp_path / "logs"))

    assert {t.name for t in result.tasks} == BEFORE_CHECK, [t.name for t in result.tasks]
    assert all(t.status == "ran" for t in result.tasks)
    assert result.task("import-labels").outputs["Output"] == 2
    assert result.task("collect-feedback").outputs["Output"] == 1
    assert check_of(result) == (False, "3 new row(s) (2 labeled + 1 feedback) < labeling.retrain_min_new_rows=5")
    assert git_log(repo) == before


def test_enough_new_data_trains_promotes_and_next_run_counts_only_new_rows(
        ls, label_studio, support_bot_spec, tiny_causal_lm, tmp_path, monkeypatch):  # noqa: F811
    spec = make_spec(support_bot_spec, tiny_causal_lm, tmp_path, label_studio.url, "continuous-enough",
                     min_new_rows=4)
    tasks = open_tasks(ls, spec, tmp_path)
    annotate(ls, tasks[:3])
    logs = tmp_path / "logs"
    append_log(logs, [("r1", "How do I reset my password?", "Click forgot password.", "up", None),
                      ("r2", "Do you ship abroad?", "No.", "down", "Yes, to most countries in Europe."),
                      ("r3", "Are you a robot?", "Maybe.", "down", None)])  # no training target
    repo = spec["delivery"]["gitops"]["repo"]
    before = git_log(repo)
    code = source_digest()

    first = run(spec, tmp_path / "work", code, feedback_log=str(logs / "payloads.jsonl"))
    names = {t.name for t in first.tasks}
    assert BEFORE_CHECK < names and all(t.status == "ran" for t in first.tasks), names
    assert (first.task("import-labels").outputs["Output"], first.task("collect-feedback").outputs["Output"]) == (3, 2)
    assert check_of(first) == (True, "5 new row(s) (3 labeled + 2 feedback) >= labeling.retrain_min_new_rows=4")
    labeled = first.artifact_path("import-labels", "labeled")
    trained = [t for t in first.tasks if t.name.startswith("train-")]
    assert trained, names
    # trained on the labeled version: the model's card names that data set
    model_card = json.loads((Path(trained[0].outputs["model"].path) / "card.json").read_text())
    labeled_card, splits = read_version(labeled)
    assert labeled_card["fingerprint"] in json.dumps(model_card)
    people = [r for rows in splits.values() for r in rows if r.get("label_source") == "annotators"]
    assert len(people) == 3 and all(r["response"] == r["chosen"] for r in people)
    gate = next(t for t in first.tasks if t.name.startswith("gate-"))
    assert gate.outputs["Output"] is True, gate.outputs["blessing"].metadata
    sha, _ = head_commit(repo, "main")
    assert sha not in before and len(git_log(repo)) == len(before) + 1
    overlay = subprocess.run(["git", "--git-dir", repo, "show",
                              "main:manifests/overlays/production/inferenceservice.yaml"],
                             capture_output=True, text=True, check=True).stdout
    assert gate.outputs["digest"].split(":")[1][:12] in overlay

    # One more annotation and one more accepted answer arrive; the next recurring run is given the
    # previous versions as a user would: a path, and a pvc:// URI of the claim they were copied to.
    annotate(ls, tasks[3:4])
    append_log(logs, [("r4", "What are your opening hours?", "9 to 5.", "up", None)])
    pvc = tmp_path / "pvc"
    shutil.copytree(first.artifact_path("collect-feedback", "feedback"), pvc / "aicd-data" / "feedback-v1")
    monkeypatch.setenv("AICD_PVC_ROOT", str(pvc))
    second = run(spec, tmp_path / "work", code, feedback_log=str(logs), previous_labels=str(labeled),
                 previous_feedback="pvc://aicd-data/feedback-v1")
    assert {t.name for t in second.tasks} == BEFORE_CHECK, [t.name for t in second.tasks]
    assert (second.task("import-labels").outputs["Output"], second.task("collect-feedback").outputs["Output"]) \
        == (1, 1)
    assert check_of(second) == (False, "2 new row(s) (1 labeled + 1 feedback) < labeling.retrain_min_new_rows=4")
    assert head_commit(repo, "main")[0] == sha
    feedback_card, feedback_splits = read_version(second.artifact_path("collect-feedback", "feedback"))
    assert sum(len(rows) for rows in feedback_splits.values()) == 3  # the first run's 2 and the new one
    assert feedback_card["parent"] == read_version(pvc / "aicd-data" / "feedback-v1")[0]["fingerprint"]
