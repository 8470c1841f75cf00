"""Sentence-transformers encoders keep their mean pooling when they become classifiers.

BertForSequenceClassification feeds its head the pooler ([CLS], dense, tanh); a sentence
encoder such as all-MiniLM-L6-v2 was trained to be read as the masked mean of its token
vectors (1_Pooling/config.json), so its head must see that mean.
"""

import json
import shutil

import pytest
import torch
from helpers.data import make_dataset, review_rows
from helpers.specs import classification_spec
from safetensors.torch import load_file
from tiny_models import recard_base

from aicd.components.errors import ModelError
from aicd.components.models import load_classifier, load_model_artifact
from aicd.components.pooling import apply_pooling, declared_pooling
from aicd.components.training.adapter import train_adapter

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["good", "this was not what the doctor promised at all and it hurt"]


def _pooling_folder(folder, mean: bool, path: str = "1_Pooling"):
    (folder / path).mkdir(parents=True)
    (folder / path / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": not mean, "pooling_mode_mean_tokens": mean}))


@pytest.fixture
def sentence_encoder(tiny_encoder, tmp_path):
    """The tiny encoder shipped as a sentence-transformers folder with mean pooling."""
    folder = shutil.copytree(tiny_encoder, tmp_path / "st-encoder")
    _pooling_folder(folder, mean=True)
    return recard_base(folder)  # shipped with its pooling folder: the provider's card lists it


def _head_input_and_logits(model, tokenizer, texts):
    captured = []
    hook = model.classifier.register_forward_hook(lambda _m, args, _o: captured.append(args[0]))
    try:
        with torch.inference_mode():
            enc = tokenizer(texts, padding=True, return_tensors="pt")
            out = model(**enc)
    finally:
        hook.remove()
    return captured[0], out.logits, enc


@pytest.mark.parametrize("layout, expected", [
    ({"1_Pooling": True}, "mean"),
    ({"1_Pooling": False}, None),
    ({}, None),
    ({"pool": True, "modules.json": [{"idx": 1, "path": "pool", "type": "sentence_transformers.models.Pooling"}]},
     "mean"),
])
def test_declared_pooling_reads_the_sentence_transformers_folder(tmp_path, layout, expected):
    for name, value in layout.items():
        if name == "modules.json":
            (tmp_path / name).write_text(json.dumps(value))
        else:
            _pooling_folder(tmp_path, mean=value, path=name)
    assert declared_pooling(tmp_path) == expected


def test_the_head_of_a_sentence_encoder_sees_the_masked_mean_of_its_tokens(sentence_encoder):
    model, tokenizer, _ = load_classifier(str(sentence_encoder), LABELS)
    model.eval()
    head_input, logits, enc = _head_input_and_logits(model, tokenizer, TEXTS)
    with torch.inference_mode():
        hidden = model.bert(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(head_input, (hidden * mask).sum(1) / mask.sum(1), atol=1e-6)
    # padding does not change the short text's prediction
    _, alone, _ = _head_input_and_logits(model, tokenizer, TEXTS[:1])
    assert torch.allclose(logits[0], alone[0], atol=1e-5)


def test_a_plain_encoder_keeps_its_own_pooler(tiny_encoder):
    model, tokenizer, _ = load_classifier(str(tiny_encoder), LABELS)
    head_input, _, enc = _head_input_and_logits(model, tokenizer, TEXTS)
    with torch.inference_mode():
        assert torch.allclose(head_input, model.bert(**enc).pooler_output, atol=1e-6)


def test_mean_pooling_on_a_model_without_a_pooler_is_a_clear_error(tiny_encoder):
    model, _, _ = load_classifier(str(tiny_encoder), LABELS)
    model.bert.pooler = None
    with pytest.raises(ModelError, match=r"^m asks for mean pooling, but BertForSequenceClassification has no "
                                         r"pooler to replace"):
        apply_pooling(model, "mean", "m")
    assert apply_pooling(model, "mean", "m", declared=True) is model  # a declared pooling is only logged


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_trained_classifier_loads_back_with_mean_pooling(sentence_encoder, tmp_path, method):
    spec = classification_spec(sentence_encoder, tmp_path / "ck", max_steps=3,
                               methods=[{"name": "m", "method": method, "target_modules": ["query", "value"]}])
    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    train_adapter(spec, data, "m", tmp_path / "out", progress=False)
    if method == "lora":  # the mean has no weights: only the head is saved beside the adapter
        saved = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
        assert any("classifier" in k for k in saved) and not any("pooler" in k for k in saved)
    else:  # a full-weights artifact carries no 1_Pooling folder: its config names the pooling
        assert json.loads((tmp_path / "out" / "config.json").read_text())["aicd_pooling"] == "mean"
    model, tokenizer, _ = load_model_artifact(tmp_path / "out", LABELS)
    head_input, logits, enc = _head_input_and_logits(model, tokenizer, TEXTS)
    with torch.inference_mode():
        hidden = model.base_model.model.bert(**enc) if method == "lora" else model.bert(**enc)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(head_input, (hidden.last_hidden_state * mask).sum(1) / mask.sum(1), atol=1e-5)


def test_an_adapter_trained_on_the_pooler_keeps_it(tiny_encoder, tmp_path):
    """Adapters trained before mean pooling saved the pooler: they load onto it, not onto the mean."""
    base = shutil.copytree(tiny_encoder, tmp_path / "base")
    spec = classification_spec(base, tmp_path / "ck", max_steps=3)
    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    train_adapter(spec, data, "lora-r8", tmp_path / "out", progress=False)
    model, tokenizer, _ = load_model_artifact(tmp_path / "out", LABELS)
    _, before, _ = _head_input_and_logits(model, tokenizer, TEXTS)
    _pooling_folder(base, mean=True)  # the base folder now declares mean pooling
    recard_base(base)  # its provider shipped the change with a new card
    model, tokenizer, _ = load_model_artifact(tmp_path / "out", LABELS)
    _, after, _ = _head_input_and_logits(model, tokenizer, TEXTS)
    assert torch.allclose(before, after, atol=1e-6)
