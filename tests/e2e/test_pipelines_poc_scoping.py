"""Stage 1 (poc) and stage 2 (scoping) pipelines end to end under kfp.local, against a real Label Studio.

Real steps, a real Label Studio on 127.0.0.1, real tiny random models (tests/tiny_models.py)
and a real bare GitOps repository; nothing is mocked. People's labels are annotations
created through the Label Studio API, exactly what the labeling UI posts.

- poc, support-bot (causal LM, pairwise labeling): two tiny candidates, each zero- and
  few-shot, reviewed side by side (review.html and Pairwise tasks); the chosen one's
  answers become the model side of the labeling tasks.
- poc, review-sentiment (classification, uncertainty sampling): the leaderboard holds the
  TF-IDF baseline; the chosen linear probe scores every row it samples.
- scoping, support-bot: the labels come back from Label Studio, the benchmark runs on the
  labeled version, and the chosen base model is promoted as the first champion (evaluated
  in the mode it won the leaderboard in, few-shot examples included).
- scoping, review-sentiment: the chosen entry is the linear probe select_candidate copies
  into its Model output; that artifact, not the bare encoder, is evaluated and gated. A
  probe on a tiny *random* encoder does not beat the majority-class baseline with its
  interval, so the gate refuses it with that reason and nothing reaches Git.
"""

import json
import subprocess
from pathlib import Path

import pytest

from aicd.components.cards import verify_card
from aicd.components.labeling.client import LabelStudio
from aicd.components.labeling.configs import result_for
from aicd.components.labeling.review import review_project
from aicd.components.labeling.sampling import select
from aicd.components.labeling.uncertainty import model_uncertainty
from aicd.components.labeling.versions import read_version
from aicd.components.spec import parse_spec
from aicd.pipelines.cache import source_digest
from aicd.pipelines.gitops import ensure_gitops_repo, head_commit
from aicd.pipelines.local import run_local
from aicd.pipelines.stages import build_pipeline, pipeline_arguments

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ls(label_studio, monkeypatch):  # noqa: F811
    # The steps run in subprocesses of this process: they inherit the token variable.
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.token)
    client = LabelStudio(label_studio.url, label_studio.token)
    yield client
    client.close()


def small_metrics(spec: dict, **extra) -> None:
    spec["metrics"].update(max_examples=6, bootstrap_samples=50, max_new_tokens=4, behavioural=[],
                           probe_prompts=[], **extra)


@pytest.fixture
def bot_spec(support_bot_spec, tiny_causal_lm, label_studio, tmp_path) -> dict:  # noqa: F811
    spec = support_bot_spec
    spec["candidates"] = [{"name": "tiny-a", "uri": str(tiny_causal_lm)},
                          {"name": "tiny-b", "uri": str(tiny_causal_lm), "prompt_template": "Q: {instruction}\nA:"}]
    spec["data"]["max_rows"] = 60
    small_metrics(spec, gates={"thresholds": {}, "non_inferiority": {}})
    spec["labeling"].update(url=label_studio.url, project=f"poc-bot-{tmp_path.name}"[-40:], batch_size=4)
    repo = tmp_path / "gitops.git"
    ensure_gitops_repo(repo, "main", ROOT / "manifests")
    spec["delivery"]["gitops"]["repo"] = str(repo)
    return pipeline_arguments(parse_spec(spec))


@pytest.fixture
def sentiment_spec(review_sentiment_spec, tiny_encoder, label_studio, tmp_path) -> dict:  # noqa: F811
    spec = review_sentiment_spec
    spec["candidates"] = [{"name": "tiny-bert", "uri": str(tiny_encoder)}]
    spec["data"]["max_rows"] = 120
    small_metrics(spec)
    spec["labeling"].update(url=label_studio.url, project=f"poc-sentiment-{tmp_path.name}"[-40:], batch_size=6)
    # a tiny random encoder cannot reach the spec's accuracy; the first champion has nothing to compare with
    spec["metrics"]["gates"] = {"thresholds": {}, "non_inferiority": {}}
    repo = tmp_path / "gitops.git"
    ensure_gitops_repo(repo, "main", ROOT / "manifests")
    spec["delivery"]["gitops"]["repo"] = str(repo)  # the spec's own path and pull-request mode stay
    return pipeline_arguments(parse_spec(spec))


def overlay_at(repo: str, ref: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, "show", f"{ref}:{path}/inferenceservice.yaml"],
                          capture_output=True, text=True, check=True).stdout


def run(name: str, spec: dict, workdir: Path):
    return run_local(build_pipeline(name), spec, workdir, code_digest=source_digest())


def board(run_) -> dict:
    return json.loads((run_.artifact_path("select-candidate", "leaderboard") / "leaderboard.json").read_text())


def project_tasks(ls: LabelStudio, title: str) -> list[dict]:
    project = ls.find_project(title)
    assert project is not None, f"no Label Studio project {title!r}"
    return ls.tasks(project["id"])


def test_poc_then_scoping_support_bot(ls, bot_spec, tmp_path):
    poc = run("poc", bot_spec, tmp_path / "work")
    assert all(t.status == "ran" for t in poc.tasks), [(t.name, t.status) for t in poc.tasks]
    entries = {e["name"] for e in board(poc)["entries"]}
    assert entries == {"tiny-a/zero-shot", "tiny-a/few-shot-2", "tiny-b/zero-shot", "tiny-b/few-shot-2"}

    # the side-by-side review: every entry and the reference, in the page and in Label Studio
    page = poc.artifact_path("review-leaderboard", "review").read_text()
    for name in entries | {"reference"}:
        assert f"<th>{name}</th>" in page
    review = project_tasks(ls, review_project(parse_spec(bot_spec)))
    assert len(review) == poc.task("review-leaderboard").outputs["Output"] > 0
    assert len(review) % 10 == 0  # 5 sides: 10 pairs per prompt
    sides = {t["data"]["aicd_left"] for t in review} | {t["data"]["aicd_right"] for t in review}
    assert sides == entries | {"reference"}

    # labeling: pairwise tasks whose model side is the chosen candidate's answer on that row
    report = json.loads((poc.artifact_path("evaluate-model", "report") / "report.json").read_text())
    answers = dict(zip(report["examples"]["ids"], report["examples"]["predictions"]))
    tasks = project_tasks(ls, bot_spec["labeling"]["project"])
    assert len(tasks) == poc.task("export-for-labeling").outputs["Output"] == 4
    for task in tasks:
        data = task["data"]
        assert data["aicd_id"] in answers
        model_side = "left" if data["aicd_left"] == "model" else "right"
        assert data[model_side] == answers[data["aicd_id"]]

    # people prefer a side on three tasks; scoping imports them and ships the first champion
    for task, side in zip(tasks[:3], ["left", "right", "left"]):
        ls.annotate(task["id"], result_for("pairwise", side))
    scoping = run("scoping", bot_spec, tmp_path / "work")
    assert all(t.status == "ran" or t.status == "cached" for t in scoping.tasks)
    labels = scoping.task("import-labels")
    assert labels.outputs["Output"] == 3 and labels.outputs["metrics"].metadata["labeled"] == 3
    select_task = scoping.task("select-candidate")
    chosen = select_task.outputs["candidate"]
    assert chosen in ("tiny-a", "tiny-b")
    # the chosen base model is delivered as a reference, and evaluated in its leaderboard mode
    mode = select_task.outputs["mode"]
    ref = json.loads((scoping.artifact_path("select-candidate", "model") / "base-model.json").read_text())
    assert ref["candidate"] == chosen and ref["mode"] == mode
    assert len(ref["shot_examples"]) == (2 if mode == "few-shot-2" else 0)
    evaluated = json.loads((scoping.artifact_path("evaluate-model", "report") / "report.json").read_text())
    assert evaluated["model"]["name"] == chosen and evaluated["model"]["digest"] is None
    assert evaluated["model"].get("shots", 0) == len(ref["shot_examples"])
    gate = scoping.task("gate-candidate")
    assert gate.outputs["Output"] is True, gate.outputs["blessing"].metadata
    # compared, like every delivery, with what serves: nothing yet, so the spec's first base model
    blessing = json.loads((Path(gate.outputs["blessing"].path) / "blessing.json").read_text())
    assert blessing["champion"]["name"] == "tiny-a" and blessing["champion"]["digest"] is None
    assert blessing["summary"]["comparison"]["diff"] == pytest.approx(
        blessing["summary"]["comparison"]["candidate"] - blessing["summary"]["comparison"]["champion"])
    repo = bot_spec["delivery"]["gitops"]["repo"]
    sha, _ = head_commit(repo, "main")
    assert scoping.task("promote-adapter").outputs["Output"] == sha
    overlay = subprocess.run(["git", "--git-dir", repo, "show",
                              "main:manifests/overlays/production/inferenceservice.yaml"],
                             capture_output=True, text=True, check=True).stdout
    base = bot_spec["candidates"][0]["uri"]  # both candidates are the tiny model
    assert f"aicd.dev/model-id: base:{base}" in overlay and f"- --base\n      - {base}\n" in overlay, overlay


def test_poc_then_scoping_review_sentiment(ls, sentiment_spec, tmp_path):
    poc = run("poc", sentiment_spec, tmp_path / "work")
    leaderboard = board(poc)
    names = {e["name"]: e for e in leaderboard["entries"]}
    assert set(names) == {"tiny-bert/linear-probe", "tfidf-logreg/baseline"}, names
    assert leaderboard["chosen"]["name"] == "tiny-bert/linear-probe"  # the baseline is ranked, never chosen

    page = poc.artifact_path("review-leaderboard", "review").read_text()
    for name in names:
        assert f"<th>{name}</th>" in page
    assert ls.find_project(review_project(parse_spec(sentiment_spec))) is None  # labels: no pairwise review
    assert poc.task("review-leaderboard").outputs["Output"] == 0

    tasks = project_tasks(ls, sentiment_spec["labeling"]["project"])
    assert len(tasks) == poc.task("export-for-labeling").outputs["Output"] == 6
    # uncertainty sampling: the chosen probe (select_candidate's Model output) scored every row,
    # and the 6 it is least sure of were sent
    probe = poc.artifact_path("select-candidate", "model")
    assert Path(leaderboard["chosen"]["model_dir"]) == probe
    verify_card(probe, "model")  # the probe's card checks out (raises otherwise)
    dataset = poc.artifact_path("ingest-dataset", "dataset")
    _, splits = read_version(dataset)
    rows = [r for part in splits.values() for r in part]
    scores = model_uncertainty(parse_spec(sentiment_spec).task, probe, rows)
    assert len(scores) == len(rows)
    sixth = sorted(scores.values(), reverse=True)[5]
    sent = [scores[t["data"]["aicd_id"]] for t in tasks]
    assert all(s >= sixth - 1e-6 for s in sent), (sent, sixth)  # (tolerance: scored in another process)
    assert sorted(sent) != sorted(scores[r["id"]] for r in select(rows, 6, "random"))  # not the random order
    # the leaderboard artifact holds the entries' reports itself, by paths relative to it
    folder = poc.artifact_path("select-candidate", "leaderboard")
    for entry in leaderboard["entries"]:
        assert not Path(entry["report"]).is_absolute() and (folder / entry["report"]).is_file(), entry["report"]

    # people label four rows; scoping gates and promotes the chosen probe itself, not the bare encoder
    labels = parse_spec(sentiment_spec).task.labels
    for i, task in enumerate(tasks[:4]):
        ls.annotate(task["id"], result_for("choices", labels[i % len(labels)]))
    scoping = run("scoping", sentiment_spec, tmp_path / "work")
    assert scoping.task("import-labels").outputs["Output"] == 4
    assert board(scoping)["chosen"]["name"] == "tiny-bert/linear-probe"
    chosen = scoping.artifact_path("select-candidate", "model")
    card = verify_card(chosen, "model")
    assert card["method"] == "linear-probe" and card["base_model"] == sentiment_spec["candidates"][0]["uri"]
    evaluated = json.loads((scoping.artifact_path("evaluate-model", "report") / "report.json").read_text())
    assert evaluated["model"]["digest"] == card["digest"]
    gate = scoping.task("gate-candidate")
    assert gate.outputs["Output"] is False and gate.outputs["digest"] == card["digest"], \
        gate.outputs["blessing"].metadata
    blessing = json.loads((Path(gate.outputs["blessing"].path) / "blessing.json").read_text())
    assert blessing["champion"]["name"] == "tiny-bert" and blessing["champion"]["digest"] is None  # the bare encoder
    assert "comparison" in blessing["summary"] and "majority" in blessing["summary"]["baselines"]
    refused = {c["name"] for c in blessing["checks"] if not c["passed"]}
    assert "baseline:majority" in refused, blessing["reasons"]
    assert not any(t.name.startswith("promote-adapter") and t.status == "ran" for t in scoping.tasks)
    gitops = sentiment_spec["delivery"]["gitops"]
    assert "aicd.dev/model-id" not in overlay_at(gitops["repo"], "main", gitops["path"])
