"""`training.early_stopping_patience` on a fine-tuning method: validation every `checkpoint.every_steps`,
the adapter of the lowest validation loss is the one written, and the run stops after `patience`
validations without improvement. (It had been honoured by training from scratch only, and silently
ignored by every adapter method.)"""

import pytest
from helpers.adapters import LABELS
from helpers.data import causal_rows, make_dataset, review_rows
from helpers.specs import causal_spec, classification_spec

from aicd.components.data.format import read_split
from aicd.components.models import load_model_artifact
from aicd.components.spec import parse_spec

LORA = {"name": "lora", "method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def _saved_validation_loss(out, spec, data, labels=None) -> float:
    from aicd.components.training.adapter import classifier_options, validation_examples
    from aicd.components.training.loop import validation_loss

    model, tokenizer, _ = load_model_artifact(out, labels)
    spec = parse_spec(spec)
    weights = classifier_options(spec, spec.training.methods[0], read_split(data, "train")).get("class_weights")
    val = validation_examples(spec, data, tokenizer)
    return validation_loss(model, val, spec.training.batch_size, tokenizer.pad_token_id, spec.training.packing,
                           weights)


def test_a_diverging_classifier_stops_and_keeps_its_best_adapter(tiny_causal_lm, tmp_path):
    from aicd.components.training.adapter import train_adapter

    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    # A learning rate this high diverges: validation loss rises and patience 1 stops the run.
    spec = classification_spec(tiny_causal_lm, tmp_path / "ck", max_steps=30, methods=[LORA], learning_rate=0.5,
                               warmup_ratio=0.0, early_stopping_patience=1,
                               checkpoint={"every_steps": 1, "root": str(tmp_path / "ck")})
    result = train_adapter(spec, data, "lora", tmp_path / "out", progress=False)
    card = load_model_artifact(tmp_path / "out", LABELS)[2]
    vals = [v for _, v in card["metrics"]["val_losses"]]
    assert card["hyperparameters"]["stopped_early"] is True and card["hyperparameters"]["steps_run"] < 30
    assert result.steps == len(vals) < 30
    assert vals[-1] > min(vals) and result.best_val_loss == min(vals)
    # what was written is the best step's adapter and head, not the last step's
    assert _saved_validation_loss(tmp_path / "out", spec, data, LABELS) == pytest.approx(min(vals), abs=1e-4)


def test_a_causal_lm_adapter_validates_on_response_tokens(tiny_causal_lm, tmp_path):
    from aicd.components.training.adapter import train_adapter

    data = make_dataset(tmp_path / "ds", causal_rows(24))
    spec = causal_spec(tiny_causal_lm, tmp_path / "ck", max_steps=6, learning_rate=0.01,
                       early_stopping_patience=3, checkpoint={"every_steps": 2, "root": str(tmp_path / "ck")})
    method = spec["training"]["methods"][0]["name"]
    result = train_adapter(spec, data, method, tmp_path / "out", progress=False)
    card = load_model_artifact(tmp_path / "out")[2]
    steps = [s for s, _ in card["metrics"]["val_losses"]]
    assert steps == [2, 4, 6] and result.best_val_loss == min(v for _, v in card["metrics"]["val_losses"])
    assert _saved_validation_loss(tmp_path / "out", spec, data) == pytest.approx(result.best_val_loss, abs=1e-4)


def test_without_patience_nothing_is_validated(tiny_causal_lm, tmp_path):
    from aicd.components.training.adapter import train_adapter

    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    spec = classification_spec(tiny_causal_lm, tmp_path / "ck", max_steps=3, methods=[LORA])
    result = train_adapter(spec, data, "lora", tmp_path / "out", progress=False)
    card = load_model_artifact(tmp_path / "out", LABELS)[2]
    assert "val_losses" not in card["metrics"] and result.best_val_loss is None and result.steps == 3


def test_an_empty_validation_split_trains_on_with_a_warning(tiny_causal_lm, tmp_path, caplog):
    from aicd.components.data.format import write_dataset
    from aicd.components.training.adapter import train_adapter

    rows = review_rows()
    data = tmp_path / "ds"
    write_dataset(data, {"train": rows, "validation": [], "test": rows[:6]}, fingerprint="fp",
                  task="text-classification")
    spec = classification_spec(tiny_causal_lm, tmp_path / "ck", max_steps=3, methods=[LORA],
                               early_stopping_patience=1)
    with caplog.at_level("WARNING", logger="aicd.components.training.adapter"):
        result = train_adapter(spec, data, "lora", tmp_path / "out", progress=False)
    assert "early_stopping_patience is set but the validation split is empty" in caplog.text
    assert result.steps == 3 and result.best_val_loss is None


def test_the_best_weights_kept_are_the_trainable_ones(tiny_causal_lm):
    """A LoRA run's best snapshot (held in memory and in every checkpoint) is the adapter and head,
    not a second copy of the base model."""
    from aicd.components.models import load_classifier
    from aicd.components.training.checkpoint import trainable_state
    from aicd.components.training.methods import apply_method

    spec = parse_spec(classification_spec(tiny_causal_lm, tiny_causal_lm / "unused", methods=[LORA]))
    model = apply_method(load_classifier(str(tiny_causal_lm), LABELS)[0], spec.training.methods[0],
                         "text-classification", "training.methods.lora")
    kept = trainable_state(model, "cpu")
    assert kept and all(("lora_" in k or "score" in k) and v.device.type == "cpu" for k, v in kept.items())
    assert sum(v.numel() for v in kept.values()) < sum(p.numel() for p in model.parameters()) / 4
