"""The finetune pipeline end to end under kfp.local, on the tiny random model and few steps.

Real steps (ingest, train, evaluate, compare, gate, promote into a bare Git repository);
only the model is tiny. The second run shows the content-hash cache: every cacheable
step is skipped and every output is byte-identical; only the sources' fingerprint and the GitOps
branch's commit are read again every run (their inputs live outside the pipeline), and promote
whenever the gate passes. The champion lookup is cached on that commit, so a champion promoted
between runs, by the pipeline or by hand, is seen and gated against.
"""

import json
import subprocess
from pathlib import Path

import pytest
from tiny_models import tiny_finetune_spec

from aicd.components.spec import parse_spec
from aicd.pipelines.cache import path_digest, run_outputs, source_digest
from aicd.pipelines.gitops import head_commit
from aicd.pipelines.local import run_local
from aicd.pipelines.stages import build_pipeline, pipeline_arguments

ROOT = Path(__file__).resolve().parents[2]
# Never cached: their inputs live outside the pipeline (the sources' bytes, Git; one light step reads both).
# Ingest is cached on the sources' fingerprint, find-champion on the branch's commit: each runs when that changed.
ALWAYS_RUN = {"fingerprint-inputs", "promote-adapter", "roll-out-canary"}
PROMOTION = {"promote-adapter", "roll-out-canary"}  # under dsl.If(gate passed)


@pytest.fixture
def tiny_spec(support_bot_spec, tiny_causal_lm, tmp_path) -> dict:
    """The demo spec with the model swapped for the tiny one, a short run and permissive gates."""
    spec = tiny_finetune_spec(support_bot_spec, tiny_causal_lm, tmp_path, ROOT / "manifests")
    return pipeline_arguments(parse_spec(spec))


@pytest.fixture
def first_run(tiny_spec, tmp_path):
    """The first run, with the code digest frozen for this test (others may edit sources meanwhile)."""
    pipeline = build_pipeline("finetune")
    code = source_digest()
    run = run_local(pipeline, tiny_spec, tmp_path / "work", code_digest=code)
    return pipeline, code, run


def test_finetune_trains_gates_and_promotes(first_run, tiny_spec):
    _, _, first = first_run
    names = [t.name for t in first.tasks]
    assert {"fingerprint-inputs", "ingest-dataset", "profile-dataset", "list-methods", "choose-start",
            "train-adapter", "evaluate-model", "choose-method", "find-champion", "evaluate-model-2",
            "evaluate-model-3", "compare-models", "gate-candidate", "promote-adapter",
            "roll-out-canary"} == set(names), names
    assert first.task("choose-start").outputs["Output"] == "base"  # no dpo method: every method from the base
    # the adapter became the first champion: nothing to roll out
    assert first.task("roll-out-canary").outputs["Output"] == "champion"
    assert all(t.status == "ran" for t in first.tasks)
    best = first.task("choose-method").outputs
    assert best["chosen"] == "lora-r4"
    assert best["best"].metadata["digest"] == first.task("train-adapter").outputs["model"].metadata["digest"]
    # nothing serves yet: the champion to beat is the base model, by reference
    assert first.task("find-champion").outputs["Output"] == ""
    gate = first.task("gate-candidate")
    assert gate.outputs["Output"] is True, gate.outputs["blessing"].metadata
    assert gate.outputs["digest"] == best["best"].metadata["digest"]
    blessing = json.loads((Path(gate.outputs["blessing"].path) / "blessing.json").read_text())
    assert blessing["champion"]["digest"] is None and blessing["champion"]["uri"] == tiny_spec["candidates"][0]["uri"]
    repo = tiny_spec["delivery"]["gitops"]["repo"]
    sha, _ = head_commit(repo, "main")
    assert first.task("promote-adapter").outputs["Output"] == sha
    overlay = subprocess.run(["git", "--git-dir", repo, "show",
                              "main:manifests/overlays/production/inferenceservice.yaml"],
                             capture_output=True, text=True, check=True).stdout
    assert gate.outputs["digest"].split(":")[1][:12] in overlay


def test_rerun_gates_against_the_new_champion_then_comes_from_the_cache(first_run, tiny_spec, tmp_path):
    """After the first run promoted its adapter, the same pipeline compares against that champion
    (read from Git, evaluated from the cache: it is the first run's candidate, by content); once
    Git no longer moves, a re-run is all cache hits with identical outputs."""
    pipeline, code, first = first_run
    repo = tiny_spec["delivery"]["gitops"]["repo"]
    sha, _ = head_commit(repo, "main")
    adapter = first.task("gate-candidate").outputs["digest"]
    second = run_local(pipeline, tiny_spec, tmp_path / "work", code_digest=code)
    # it is the champion already: the gate says so and nothing is promoted or rolled out
    assert [t.name for t in second.tasks] == [t.name for t in first.tasks if t.name not in PROMOTION]
    # Git moved (the promotion), so the champion is looked up again and gated against; the comparison's
    # champion report is new; choose_start sees the new champion, but with no dpo method it writes the same
    # base reference, so training still comes from the cache
    changed = ALWAYS_RUN - PROMOTION | {"find-champion", "compare-models", "gate-candidate", "choose-start"}
    for task in second.tasks:
        assert task.status == ("ran" if task.name in changed else "cached"), task.name
    assert second.task("find-champion").outputs["Output"] == adapter
    reports = {t.name: t.outputs["report"] for t in second.tasks if "report" in t.outputs}
    assert reports["evaluate-model-3"].metadata["digest"] == adapter  # the champion, evaluated from the cache
    assert path_digest(reports["evaluate-model-3"].path) == path_digest(reports["evaluate-model-2"].path)
    comparison = json.loads((Path(second.task("compare-models").outputs["comparison"].path) /
                             "comparison.json").read_text())
    assert all(m["diff"] == 0 for m in comparison["metrics"].values()), comparison["metrics"]
    blessing = json.loads((Path(second.task("gate-candidate").outputs["blessing"].path) / "blessing.json").read_text())
    assert blessing["champion"]["digest"] == adapter
    assert (blessing["passed"], blessing["already_serving"]) == (False, adapter)
    assert blessing["reasons"] == [f"already serving {adapter}: nothing to promote (the candidate is that very "
                                   "artifact)"]
    assert head_commit(repo, "main")[0] == sha

    third = run_local(pipeline, tiny_spec, tmp_path / "work", code_digest=code)
    for task in third.tasks:
        assert task.status == ("ran" if task.name in ALWAYS_RUN else "cached"), task.name
    assert third.task("fingerprint-inputs").outputs["revision"] == sha
    # every output equal, the gate's blessing too (it comes from the cache, time and all)
    assert run_outputs(third) == run_outputs(second)
    assert head_commit(repo, "main")[0] == sha


def test_a_champion_replaced_by_hand_between_runs_is_gated_against(tiny_spec, tmp_path):
    """Git moves outside the pipeline: after a run promoted adapter A and a re-run came from the cache, an
    operator makes the base model the champion again by a commit of their own. The next run must not reuse
    the cached champion: it reads the new commit, finds the base model, gates A against it (A passes the
    permissive gate) and promotes A again, now as the canary."""
    from aicd.components.contracts import step_spec
    from aicd.components.delivery import isvc
    from aicd.components.delivery.gitops import commit_overlay

    tiny_spec["delivery"]["rollout"] = "external"  # the canary's rollout is the rollout pipeline's
    pipeline, code, work = build_pipeline("finetune"), source_digest(), tmp_path / "work"
    first = run_local(pipeline, tiny_spec, work, code_digest=code)
    adapter = first.task("gate-candidate").outputs["digest"]
    run_local(pipeline, tiny_spec, work, code_digest=code)  # gates against A: already serving
    cached = run_local(pipeline, tiny_spec, work, code_digest=code)
    assert cached.task("find-champion").status == "cached" and cached.task("gate-candidate").status == "cached"

    spec = step_spec(**{k: v for k, v in tiny_spec.items() if k != "name"})
    uri = tiny_spec["candidates"][0]["uri"]
    base = isvc.ModelRef(isvc.base_model_id(uri), uri, prompt_template=isvc.evaluated_template(spec))
    by_hand = commit_overlay(spec, lambda doc, state: isvc.set_champion(doc, spec, base) or "by hand",
                             "an operator serves the base model again")
    assert by_hand.commit

    after = run_local(pipeline, tiny_spec, work, code_digest=code)
    assert after.task("fingerprint-inputs").outputs["revision"] == by_hand.commit
    assert after.task("find-champion").status == "ran"
    assert after.task("find-champion").outputs["Output"] == base.model_id
    gate = after.task("gate-candidate")
    assert gate.status == "ran" and gate.outputs["Output"] is True, gate.outputs["blessing"].metadata
    blessing = json.loads((Path(gate.outputs["blessing"].path) / "blessing.json").read_text())
    assert blessing["champion"]["uri"] == uri and blessing["candidate_digest"] == adapter
    promoted = after.task("promote-adapter").outputs["Output"]
    assert promoted and promoted == head_commit(tiny_spec["delivery"]["gitops"]["repo"], "main")[0]
    state = isvc.state(isvc.load(subprocess.run(
        ["git", "--git-dir", tiny_spec["delivery"]["gitops"]["repo"], "show",
         "main:manifests/overlays/production/inferenceservice.yaml"], capture_output=True, text=True,
        check=True).stdout, "overlay"))
    assert isvc.same_model(state.canary, adapter), state


def test_a_retrained_copy_of_the_champion_is_already_serving(first_run, tiny_spec, tmp_path):
    """A second `make demo` whose cache misses (new code, or --no-cache): the adapter is trained again (resumed
    from its last checkpoint), so its card's timing fields differ from the champion's while its files do not.
    Gated as the demo is (superiority on nll), it is already serving: no promotion, no canary, no commit, and
    the demo exits 0 saying so."""
    from aicd.components.cards import read_card
    from aicd.pipelines.demo import _outcome, demo_verdict

    pipeline, code, first = first_run
    repo = tiny_spec["delivery"]["gitops"]["repo"]
    sha, _ = head_commit(repo, "main")
    champion = first.task("gate-candidate").outputs["digest"]
    tiny_spec["metrics"]["gates"]["superiority"] = {"nll": 0.0}
    second = run_local(pipeline, tiny_spec, tmp_path / "work", code_digest=code, cache=False)
    assert not PROMOTION & {t.name for t in second.tasks}, [t.name for t in second.tasks]
    assert second.task("train-adapter").status == "ran"
    candidate = second.task("gate-candidate").outputs["digest"]
    cards = [read_card(run.task("train-adapter").outputs["model"].path) for run in (first, second)]
    assert candidate != champion and cards[0]["files"] == cards[1]["files"]
    assert cards[0]["metrics"] != cards[1]["metrics"]  # training seconds, throughput, memory
    blessing = json.loads((Path(second.task("gate-candidate").outputs["blessing"].path) / "blessing.json").read_text())
    assert (blessing["passed"], blessing["already_serving"]) == (False, champion)
    assert blessing["reasons"][0].startswith(f"already serving {champion}: nothing to promote (the candidate "
                                             f"{candidate} has its files and base")
    assert head_commit(repo, "main")[0] == sha
    summary = _outcome(second, parse_spec(tiny_spec))
    assert summary["gate"] == f"already serving {champion}: nothing to promote"
    assert demo_verdict(summary, []) == (f"finished: already serving {champion}: nothing to promote (no new GitOps "
                                         "commit, no canary)", 0)
