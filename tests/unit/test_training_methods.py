"""Methods from the spec: peft configs, adapters that train and load, clear errors."""

import pytest
import torch
from helpers.data import causal_rows, make_dataset, review_rows
from helpers.specs import causal_spec, classification_spec
from peft import IA3Config, LoraConfig
from safetensors.torch import load_file

from aicd.components.cards import verify_card
from aicd.components.errors import ModelError, TrainingError
from aicd.components.models import load_causal_lm, load_model_artifact
from aicd.components.spec import MethodSpec
from aicd.components.training.adapter import train_adapter
from aicd.components.training.methods import peft_config, qlora_available


@pytest.mark.parametrize("method, cls, flags", [
    ("lora", LoraConfig, {"use_dora": False, "use_rslora": False, "r": 4, "lora_alpha": 8.0}),
    ("dora", LoraConfig, {"use_dora": True, "use_rslora": False}),
    ("rslora", LoraConfig, {"use_dora": False, "use_rslora": True}),
    ("ia3", IA3Config, {"feedforward_modules": {"down_proj"}}),
])
def test_peft_config_of_each_method(method, cls, flags):
    spec = MethodSpec(name="m", method=method, r=4, alpha=8, target_modules=["q_proj", "down_proj"])
    config = peft_config(spec, "causal-lm")
    assert isinstance(config, cls)
    assert set(config.target_modules) == {"q_proj", "down_proj"}
    for key, value in flags.items():
        got = getattr(config, key)
        assert (set(got) if isinstance(got, (list, set)) else got) == value


def test_full_fine_tuning_has_no_peft_config():
    assert peft_config(MethodSpec(name="f", method="full"), "causal-lm") is None


def test_unknown_target_modules_name_the_model_modules(tiny_causal_lm):
    model, _, _ = load_causal_lm(str(tiny_causal_lm))
    spec = MethodSpec(name="m", method="lora", target_modules=["q_proj", "query_key_value"])
    with pytest.raises(ModelError) as err:
        peft_config(spec, "causal-lm", model, "training.methods.0")
    assert str(err.value).startswith("`training.methods.0.target_modules` names query_key_value, "
                                     "which the model does not have")
    assert "fix: use some of the model's linear layers: down_proj, gate_proj, k_proj" in str(err.value)


@pytest.mark.skipif(qlora_available(), reason="this machine has a GPU and bitsandbytes")
def test_qlora_without_gpu_is_a_clear_error(tiny_causal_lm, tmp_path):
    spec = causal_spec(tiny_causal_lm, tmp_path / "ck")
    spec["training"]["methods"] = [{"name": "q4", "method": "qlora", "target_modules": ["q_proj"]}]
    with pytest.raises(TrainingError, match="`training.methods.q4` uses method qlora, which needs a CUDA GPU "
                                            "and the bitsandbytes package"):
        train_adapter(spec, make_dataset(tmp_path / "ds", causal_rows()), "q4", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_method_name(tiny_causal_lm, tmp_path):
    spec = causal_spec(tiny_causal_lm, tmp_path / "ck")
    with pytest.raises(TrainingError, match=r"method 'nope' is not in `training.methods` \(known: lora-r8\)"):
        train_adapter(spec, make_dataset(tmp_path / "ds", causal_rows()), "nope", tmp_path / "out")


def _base_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method, adapter_key", [
    ("lora", "lora_B"), ("dora", "lora_magnitude_vector"), ("rslora", "lora_B"), ("ia3", "ia3_l"),
])
def test_adapter_weights_change_and_base_does_not(tiny_causal_lm, tmp_path, method, adapter_key):
    targets = ["q_proj", "v_proj", "down_proj"] if method == "ia3" else ["q_proj", "v_proj"]
    spec = causal_spec(tiny_causal_lm, tmp_path / "ck", learning_rate=0.01, warmup_ratio=0.0,
                       methods=[{"name": "m", "method": method, "r": 4, "target_modules": targets}])
    before, _, _ = load_causal_lm(str(tiny_causal_lm))
    base = _base_weights(before)
    result = train_adapter(spec, make_dataset(tmp_path / "ds", causal_rows()), "m", tmp_path / "out", progress=False)
    card = verify_card(tmp_path / "out")
    assert card["kind"] == "adapter" and card["method"] == method and card["base_model"] == str(tiny_causal_lm)
    assert card["data_fingerprint"] == "fp-test" and card["base_digest"].startswith("sha256:")
    assert card["metrics"]["steps"] == 4 and result.final_loss is not None
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(card["files"])
    # The saved adapter moved away from its initialisation (LoRA B starts at 0, IA3 and DoRA at 1 / |W|).
    model, tokenizer, _ = load_model_artifact(tmp_path / "out")
    fresh, _, _ = load_causal_lm(str(tiny_causal_lm))
    from peft import get_peft_model

    from aicd.components.training.methods import peft_config as make
    init = get_peft_model(fresh, make(MethodSpec(name="m", method=method, r=4, target_modules=targets), "causal-lm"))
    init_weights = {k: v for k, v in init.state_dict().items() if adapter_key in k}
    trained = {k: v for k, v in model.state_dict().items() if adapter_key in k}
    assert trained and all(not torch.equal(trained[k], init_weights[k]) for k in trained)
    # Base weights are untouched.
    merged_base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                   for k, v in model.state_dict().items() if "lora_" not in k and "ia3_" not in k}
    assert all(torch.equal(merged_base[k], base[k]) for k in base)
    # The artifact carries the tokenizer used in training, chat template included.
    assert tokenizer.chat_template and tokenizer.name_or_path == str(tmp_path / "out")


def test_full_fine_tuning_writes_a_model_artifact(tiny_causal_lm, tmp_path):
    spec = causal_spec(tiny_causal_lm, tmp_path / "ck", learning_rate=0.01,
                       methods=[{"name": "full", "method": "full"}])
    train_adapter(spec, make_dataset(tmp_path / "ds", causal_rows()), "full", tmp_path / "out", progress=False)
    model, _, card = load_model_artifact(tmp_path / "out")
    assert card["kind"] == "model" and "model.safetensors" in card["files"]
    base = load_file(str(tiny_causal_lm / "model.safetensors"))
    trained = model.state_dict()
    assert any(not torch.equal(trained[k], base[k]) for k in base)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_classification_adapter_trains_head_and_loads(tiny_encoder, tmp_path, method):
    targets = ["query", "value", "output.dense"] if method == "ia3" else ["query", "value"]
    spec = classification_spec(tiny_encoder, tmp_path / "ck", max_steps=12,
                               methods=[{"name": "m", "method": method, "target_modules": targets}])
    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    result = train_adapter(spec, data, "m", tmp_path / "out", progress=False)
    assert result.steps == 12 and len(result.losses) == 12
    model, _, card = load_model_artifact(tmp_path / "out")
    assert card["task"] == "text-classification" and card["labels"] == ["negative", "neutral", "positive"]
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    # The new classification head was saved with the adapter, and the adapter left its initialisation
    # (LoRA B starts at 0, IA3 vectors at 1).
    saved = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert any("classifier" in k for k in saved)
    if method == "lora":  # the pooler that feeds the head trains and is saved with it
        assert any("pooler" in k for k in saved)
    init = 0.0 if method == "lora" else 1.0
    moved = [k for k, v in saved.items() if ("lora_B" in k or "ia3_l" in k) and not torch.all(v == init)]
    assert moved


def test_out_of_memory_is_a_clear_error(tiny_causal_lm, tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):  # stands in for a GPU running out of memory
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("aicd.components.training.adapter.run_loop", no_memory)
    spec = causal_spec(tiny_causal_lm, tmp_path / "ck")
    with pytest.raises(TrainingError, match="training lora-r8 ran out of memory \\(OutOfMemoryError\\)\n"
                                            "  fix: lower training.batch_size or task.max_length"):
        train_adapter(spec, make_dataset(tmp_path / "ds", causal_rows()), "lora-r8", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_best_method_follows_the_metric_direction_and_is_copied_whole(tmp_path):
    from aicd.components.cards import verify_card, write_card
    from aicd.components.training.pareto import best_method, copy_chosen

    rows = [{"method": "a", "digest": "", "quality": 0.30, "train_seconds": 9},
            {"method": "b", "digest": "", "quality": 0.50, "train_seconds": 20},
            {"method": "c", "digest": "", "quality": 0.50, "train_seconds": 10},
            {"method": "d", "digest": "", "quality": None, "train_seconds": 1}]
    assert best_method(rows, "token_f1")["method"] == "c"  # tie on quality: the cheaper training
    assert best_method(rows, "perplexity")["method"] == "a"  # lower is better
    with pytest.raises(TrainingError, match="no trained method has a token_f1 score"):
        best_method([rows[3]], "token_f1")
    models = []
    for row in rows[:3]:
        folder = tmp_path / row["method"]
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(row["method"].encode() * 16)
        row["digest"] = write_card(folder, "adapter", task="causal-lm", base_model="pkg://m", base_digest="sha256:b",
                                   method="lora", hyperparameters={}, data_fingerprint="fp", metrics={})["digest"]
        models.append(folder)
    chosen = copy_chosen(rows[:3], "token_f1", models, tmp_path / "best")
    assert chosen["method"] == "c" and verify_card(tmp_path / "best")["digest"] == rows[2]["digest"]
    with pytest.raises(TrainingError, match="has no Model artifact"):
        copy_chosen(rows[:3], "token_f1", models[:2], tmp_path / "best2")
    assert not (tmp_path / "best2").exists()


def test_classifier_options_weight_rare_classes_and_speed_up_the_head(tiny_encoder, tmp_path):
    from aicd.components.models import load_classifier
    from aicd.components.spec import parse_spec
    from aicd.components.training.adapter import HEAD_LR_FACTOR, classifier_options, find_method
    from aicd.components.training.loop import LoopConfig, param_groups
    from aicd.components.training.methods import apply_method

    raw = classification_spec(tiny_encoder, tmp_path / "ck", class_weighting="balanced", learning_rate=0.001)
    spec = parse_spec(raw)
    rows = [{"label": "positive"}] * 6 + [{"label": "negative"}] * 3 + [{"label": "neutral"}]
    method = find_method(spec, "lora-r8")
    options = classifier_options(spec, method, rows)
    # n / (classes * count): negative 10/9, neutral 10/3, positive 10/18
    assert options["class_weights"] == pytest.approx([10 / 9, 10 / 3, 10 / 18])
    assert options["head_learning_rate"] == pytest.approx(HEAD_LR_FACTOR * 0.001)
    raw["training"]["class_weighting"] = "none"
    assert "class_weights" not in classifier_options(parse_spec(raw), method, rows)

    model, _, _ = load_classifier(str(tiny_encoder), list(spec.task.labels))
    model = apply_method(model, method, "text-classification")
    groups = param_groups(model, LoopConfig(steps=1, learning_rate=0.001, head_learning_rate=0.02))
    assert len(groups) == 2 and groups[1]["lr"] == 0.02
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("modules_to_save" in names[id(p)] for p in groups[1]["params"])
    assert any("classifier" in names[id(p)] for p in groups[1]["params"])
    assert all("lora_" in names[id(p)] for p in groups[0]["params"])


WRITE_ADAPTER = """
import sys, torch
from aicd.components.models import load_causal_lm
from aicd.components.spec import MethodSpec
from aicd.components.training.methods import apply_method
from aicd.components.training.runtime import write_model_artifact
torch.manual_seed(0)
model, tokenizer, _ = load_causal_lm(sys.argv[1])
model = apply_method(model, MethodSpec(name="m", method="lora", r=4, target_modules=["q_proj", "v_proj"]), "causal-lm")
write_model_artifact(sys.argv[2], model, tokenizer, "adapter", base_model=sys.argv[1])
"""


def test_the_same_adapter_has_one_content_digest_whatever_the_hash_seed(tiny_causal_lm, tmp_path):
    """peft writes target_modules (a set) in hash order: under PYTHONHASHSEED 0 and 3 the two orders of
    {q_proj, v_proj} differ, and the same adapter got two adapter_config.json files, two content digests.
    Likewise transformers copies local_files_only (on under HF_HUB_OFFLINE=1, as in the images) into
    tokenizer_config.json: a step in its image and the same step in a local process wrote two configs."""
    import json
    import os
    import subprocess
    import sys

    from aicd.components.cards import model_content_digest

    cards = []
    for seed, offline in (("0", "1"), ("3", "0")):
        out = tmp_path / f"seed-{seed}"
        subprocess.run([sys.executable, "-c", WRITE_ADAPTER, str(tiny_causal_lm), str(out)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1",
                            "HF_HUB_OFFLINE": offline}, timeout=300)
        cards.append(verify_card(out))
        assert json.loads((out / "adapter_config.json").read_text())["target_modules"] == ["q_proj", "v_proj"]
    assert cards[0]["files"] == cards[1]["files"]
    assert model_content_digest(cards[0]) == model_content_digest(cards[1])


def test_layer_lr_decay_slows_the_lower_layers_of_a_full_fine_tune(tiny_encoder, tmp_path):
    from aicd.components.models import load_classifier
    from aicd.components.spec import parse_spec
    from aicd.components.training.adapter import find_method
    from aicd.components.training.loop import LoopConfig, param_groups
    from aicd.components.training.methods import apply_method

    spec = parse_spec(classification_spec(tiny_encoder, tmp_path / "ck", layer_lr_decay=0.5))
    model, _, _ = load_classifier(str(tiny_encoder), list(spec.task.labels))
    model = apply_method(model, find_method(spec, "full"), "text-classification")
    layers = model.config.num_hidden_layers
    groups = param_groups(model, LoopConfig(steps=1, learning_rate=0.01, layer_lr_decay=0.5))
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == len(names)  # every weight trains, once
    assert lr_of["classifier.weight"] == pytest.approx(0.01)
    assert lr_of[f"bert.encoder.layer.{layers - 1}.output.dense.weight"] == pytest.approx(0.01 * 0.5)
    assert lr_of["bert.encoder.layer.0.output.dense.weight"] == pytest.approx(0.01 * 0.5 ** layers)
    assert lr_of["bert.embeddings.word_embeddings.weight"] == pytest.approx(0.01 * 0.5 ** (layers + 1))
    assert len(param_groups(model, LoopConfig(steps=1, learning_rate=0.01))) == 1


def test_layer_lr_decay_puts_gpt2_embeddings_lowest_and_refuses_models_without_numbered_layers():
    """GPT-2 names its embeddings wte/wpe (no "embed"): they still learn slowest. A model whose weights
    carry no layer number cannot be decayed by depth: a clear error, not one rate for everything."""
    import torch

    from aicd.components.errors import TrainingError
    from aicd.components.training.loop import layer_decay_groups

    def weight(name):
        return (name, torch.nn.Parameter(torch.zeros(1)))

    named = [weight("transformer.wte.weight"), weight("transformer.wpe.weight"),
             weight("transformer.h.0.attn.c_attn.weight"), weight("transformer.h.1.attn.c_attn.weight"),
             weight("transformer.ln_f.weight")]
    lr_of = {id(p): g["lr"] for g in layer_decay_groups(named, 1.0, 0.5) for p in g["params"]}
    rates = {name: lr_of[id(p)] for name, p in named}
    assert rates["transformer.ln_f.weight"] == 1.0
    assert rates["transformer.h.1.attn.c_attn.weight"] == 0.5 and rates["transformer.h.0.attn.c_attn.weight"] == 0.25
    assert rates["transformer.wte.weight"] == rates["transformer.wpe.weight"] == 0.125
    with pytest.raises(TrainingError, match="needs numbered layers"):
        layer_decay_groups([weight("linear.weight"), weight("linear.bias")], 1.0, 0.5)


def test_layer_lr_decay_without_a_full_method_is_a_spec_error(tiny_encoder, tmp_path):
    from aicd.components.errors import SpecError
    from aicd.components.spec import parse_spec

    raw = classification_spec(tiny_encoder, tmp_path / "ck", layer_lr_decay=0.8)
    raw["training"]["methods"] = [m for m in raw["training"]["methods"] if m["method"] != "full"]
    with pytest.raises(SpecError, match="`training.layer_lr_decay` applies to full fine-tuning only"):
        parse_spec(raw)
