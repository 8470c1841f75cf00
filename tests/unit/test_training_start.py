"""Where DPO starts (issue 18): the champion adapter, continued and used as the reference, or the base.

Tiny random Llamas: the champion is a LoRA adapter a real train_adapter run made on the base.
"""

import json
import math

import pytest
import torch
from tiny_models import make_causal_lm

from aicd.components.cards import read_card
from aicd.components.data.format import write_dataset
from aicd.components.errors import IntegrityError
from aicd.components.models import BASE_MODEL_REF, load_model_artifact
from aicd.components.spec import parse_spec
from aicd.components.training.adapter import train_adapter
from aicd.components.training.start import choose_start, load_start, start_point

METHODS = [{"name": "sft", "method": "lora", "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]},
           {"name": "full", "method": "full"},
           {"name": "dpo", "method": "dpo", "r": 8, "alpha": 16, "beta": 0.1, "target_modules": ["q_proj"]}]


def _rows(n: int = 8) -> list[dict]:
    return [{"id": f"r{i}", "instruction": f"How do I reset device {i}?", "response": f"Hold the button {i} s.",
             "prompt": f"How do I reset device {i}?", "chosen": f"Hold the button {i} s.", "rejected": "No idea.",
             "source": "t", "topic": "x"} for i in range(n)]


@pytest.fixture
def spec(support_bot_spec, tiny_causal_lm, tmp_path) -> dict:
    support_bot_spec["candidates"] = [{"name": "tiny", "uri": str(tiny_causal_lm)}]
    support_bot_spec["task"]["max_length"] = 256
    support_bot_spec["training"].update(methods=METHODS, max_steps=3, batch_size=4, learning_rate=0.05,
                                        checkpoint={"root": str(tmp_path / "ck"), "every_steps": 100})
    return support_bot_spec


@pytest.fixture
def dataset(tmp_path):
    rows = _rows()
    return write_dataset(tmp_path / "ds", {"train": rows, "validation": rows, "test": rows}, task="causal-lm")


@pytest.fixture
def champion(spec, dataset, tmp_path):
    """A LoRA adapter (r=2) that a first finetune trained on the tiny base."""
    train_adapter(spec, tmp_path / "ds", "sft", tmp_path / "champion", progress=False)
    return tmp_path / "champion"


def _logits(model, tokenizer):
    ids = tokenizer("How do I reset device 3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_dpo_continues_the_champion_and_takes_it_as_reference(spec, champion, tmp_path, tiny_causal_lm):
    start, start_tok, _, point = load_start(str(tiny_causal_lm), champion)
    adapter, tok, card = load_model_artifact(champion)
    assert point.adapter == champion and point.record == f"champion {card['digest']}"
    # step 0 is the champion: its logits, not the base's, and its LoRA weights are what trains
    assert torch.allclose(_logits(start, start_tok), _logits(adapter, tok), atol=1e-6)
    bare = load_start(str(tiny_causal_lm), None)[0]
    assert not torch.allclose(_logits(bare, start_tok), _logits(adapter, tok), atol=1e-3)
    assert any(p.requires_grad for n, p in start.named_parameters() if "lora_" in n)

    result = train_adapter(spec, tmp_path / "ds", "dpo", tmp_path / "dpo", start_adapter=champion, progress=False)
    # the reference is the starting adapter: at step 0 policy == reference, so every margin is 0
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-5)
    out = read_card(tmp_path / "dpo")
    assert out["hyperparameters"]["start"] == f"champion {card['digest']}"
    assert json.loads((tmp_path / "dpo" / "adapter_config.json").read_text())["r"] == 2  # the champion's, not 8
    trained = load_model_artifact(tmp_path / "dpo")[0]
    assert not torch.allclose(_logits(trained, tok), _logits(adapter, tok), atol=1e-4)  # it moved on from there


def test_dpo_without_a_champion_starts_a_fresh_lora_on_the_base(spec, dataset, tmp_path):
    result = train_adapter(spec, tmp_path / "ds", "dpo", tmp_path / "dpo", progress=False)
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-5)  # a zero LoRA: the base is the reference
    assert read_card(tmp_path / "dpo")["hyperparameters"]["start"] == "base"
    assert json.loads((tmp_path / "dpo" / "adapter_config.json").read_text())["r"] == 8


@pytest.mark.parametrize("case, reason", [
    ("base-ref", "no champion adapter to start from"),
    ("full", "is a causal-lm model (full), not a causal-LM adapter that DPO can continue"),
    ("other-base", "is an adapter on another base"),
])
def test_a_champion_dpo_cannot_continue_means_the_base(case, reason, spec, dataset, champion, tmp_path,
                                                       tiny_causal_lm, caplog):
    if case == "base-ref":
        start = tmp_path / "ref"
        start.mkdir()
        (start / BASE_MODEL_REF).write_text(json.dumps({"candidate": ""}))
        base_uri = str(tiny_causal_lm)
    elif case == "full":
        train_adapter(spec, tmp_path / "ds", "full", tmp_path / "full", progress=False)
        start, base_uri = tmp_path / "full", str(tiny_causal_lm)
    else:
        start, base_uri = champion, str(make_causal_lm(tmp_path / "other", seed=1))
    with caplog.at_level("WARNING"):
        _, _, _, point = load_start(base_uri, start)
    assert (point.adapter, point.record) == (None, "base") and reason in point.reason
    if case != "base-ref":
        assert f"{reason}" in caplog.text and f"dpo starts from the base model {base_uri} instead" in caplog.text


def test_a_tampered_champion_is_refused(champion, tiny_causal_lm):
    (champion / "adapter_model.safetensors").write_bytes(b"not the champion")
    with pytest.raises(IntegrityError):
        start_point(champion, str(tiny_causal_lm), "sha256:x")


@pytest.mark.parametrize("methods, copied", [(["sft"], False), (["sft", "dpo"], True), (["dpo"], True)])
def test_choose_start_copies_the_champion_only_for_dpo(methods, copied, spec, champion, tmp_path):
    out = tmp_path / "start"
    said = choose_start(parse_spec(spec), methods, champion, out)
    digest = read_card(champion)["digest"]
    assert said == (f"champion {digest}" if copied else "base")
    assert (out / BASE_MODEL_REF).is_file() != copied
    if copied:
        assert read_card(out)["digest"] == digest


def test_choose_start_keeps_a_base_champion_a_reference(spec, tmp_path):
    champion = tmp_path / "champion"
    champion.mkdir()
    (champion / BASE_MODEL_REF).write_text(json.dumps({"candidate": "tiny"}))
    assert choose_start(parse_spec(spec), ["dpo"], champion, tmp_path / "start") == "base"
    assert json.loads((tmp_path / "start" / BASE_MODEL_REF).read_text()) == {"candidate": ""}


def test_a_trainjob_stages_the_champion_and_passes_start(spec, champion, tmp_path):
    """Under the TrainJob engine the dpo method gets the champion as ``--start`` on the claim; a base
    reference adds nothing, so its job is the one without a start (a retry follows the same job)."""
    from aicd.components.training.trainjob import plan

    parsed, ref = parse_spec(spec), tmp_path / "ref"
    ref.mkdir()
    (ref / BASE_MODEL_REF).write_text(json.dumps({"candidate": ""}))
    without, _ = plan(parsed, tmp_path / "ds", "dpo", "ckpt")
    based, _ = plan(parsed, tmp_path / "ds", "dpo", "ckpt", ref)
    started, work = plan(parsed, tmp_path / "ds", "dpo", "ckpt", champion)
    assert based == without and "--start" not in without["spec"]["trainer"]["args"]
    args, name = started["spec"]["trainer"]["args"], started["metadata"]["name"]
    assert name != without["metadata"]["name"]
    assert args[args.index("--start") + 1] == f"pvc://ckpt/aicd-trainjobs/{name}/start"


def test_the_entry_point_passes_start(spec, champion, tmp_path):
    from aicd.components.training.__main__ import main

    assert main(["train-adapter", "--spec-json", json.dumps(spec), "--dataset", str(tmp_path / "ds"),
                 "--method", "dpo", "--out", str(tmp_path / "out"), "--start", str(champion), "--no-progress"]) == 0
    assert read_card(tmp_path / "out")["hyperparameters"]["start"] == f"champion {read_card(champion)['digest']}"
