"""train_from_scratch: a small Llama with its own tokenizer, early stopping, resume, same artifact."""

import pytest
import torch
from helpers.data import causal_rows, make_dataset
from helpers.specs import causal_spec

from aicd.components.errors import DataError, TrainingError
from aicd.components.models import format_prompt, load_model_artifact
from aicd.components.training.scratch import train_from_scratch, train_tokenizer

ARCH = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "vocab_size": 300,
        "max_position_embeddings": 256}


def _spec(tmp_path, **training):
    settings = {"max_steps": 24, "batch_size": 4, "learning_rate": 0.003, "warmup_ratio": 0.1,
                "gradient_accumulation": 2, "from_scratch": ARCH,
                "checkpoint": {"every_steps": 4, "root": str(tmp_path / "ck")}, **training}
    return causal_spec("unused", tmp_path / "ck", **settings)


def test_tokenizer_is_trained_on_the_data_and_deterministic():
    texts = [row["response"] for row in causal_rows()]
    a, b = train_tokenizer(texts, 300), train_tokenizer(texts, 300)
    assert a.get_vocab() == b.get_vocab()
    assert len(a("Artificial intelligence")["input_ids"]) < len("Artificial intelligence")  # merges learnt
    assert a.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                 add_generation_prompt=True) == "<|user|>hi</s><|assistant|>"


def test_trains_a_model_artifact_that_loads_and_generates(tmp_path):
    data = make_dataset(tmp_path / "ds", causal_rows(32))
    result = train_from_scratch(_spec(tmp_path), data, tmp_path / "out", progress=False)
    assert result.final_loss < 0.8 * result.first_loss  # it learns (6 distinct answers)
    model, tokenizer, card = load_model_artifact(tmp_path / "out")
    assert card["kind"] == "model" and card["method"] == "from-scratch"
    assert card["hyperparameters"]["hidden_size"] == 32 and card["data_fingerprint"] == "fp-test"
    assert [step for step, _ in card["metrics"]["val_losses"]] == [4, 8, 12, 16, 20, 24]
    assert model.config.num_hidden_layers == 2 and len(tokenizer) == model.config.vocab_size
    ids = tokenizer(format_prompt(tokenizer, "What is AI?"), return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_early_stopping_keeps_the_best_weights(tmp_path):
    data = make_dataset(tmp_path / "ds", causal_rows(32))
    # A learning rate this high diverges: validation loss rises and patience 1 stops the run.
    spec = _spec(tmp_path, learning_rate=0.5, warmup_ratio=0.0, early_stopping_patience=1, max_steps=40,
                 checkpoint={"every_steps": 2, "root": str(tmp_path / "ck")})
    result = train_from_scratch(spec, data, tmp_path / "out", progress=False)
    card = load_model_artifact(tmp_path / "out")[2]
    assert card["hyperparameters"]["stopped_early"] is True
    assert result.steps < 40
    vals = [v for _, v in card["metrics"]["val_losses"]]
    assert vals[-1] > min(vals) and result.best_val_loss == min(vals)
    # A retry after early stopping does not train on: it rebuilds the same artifact.
    again = train_from_scratch(spec, data, tmp_path / "again", progress=False)
    assert again.resumed_from == result.steps and again.steps == result.steps
    # the same files, byte for byte (the card's digest also covers its timing figures, which differ)
    assert load_model_artifact(tmp_path / "again")[2]["files"] == card["files"]


def test_resume_after_interruption_is_bitwise_equal(tmp_path, monkeypatch):
    from aicd.components.training import loop as loop_module

    data = make_dataset(tmp_path / "ds", causal_rows(32))
    train_from_scratch(_spec(tmp_path, checkpoint={"every_steps": 4, "root": str(tmp_path / "ck-ref")}),
                       data, tmp_path / "ref", progress=False)
    real = loop_module._step
    count = []

    def crash_at_10(*args, **kwargs):
        count.append(1)
        if len(count) == 10:
            raise KeyboardInterrupt  # stands in for a crash between checkpoints
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "_step", crash_at_10)
    with pytest.raises(KeyboardInterrupt):
        train_from_scratch(_spec(tmp_path), data, tmp_path / "out", progress=False)
    monkeypatch.setattr(loop_module, "_step", real)
    result = train_from_scratch(_spec(tmp_path), data, tmp_path / "out", progress=False)
    assert result.resumed_from == 8
    ref, out = load_model_artifact(tmp_path / "ref")[0], load_model_artifact(tmp_path / "out")[0]
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), out.state_dict().values()))


@pytest.mark.parametrize("change, error, message", [
    ({"from_scratch": None}, TrainingError, "`training.from_scratch` is not set"),
    ({"from_scratch": {**ARCH, "max_position_embeddings": 64}}, TrainingError,
     r"`task.max_length` is 128, above `training.from_scratch.max_position_embeddings` \(64\)"),
])
def test_bad_input(tmp_path, change, error, message):
    data = make_dataset(tmp_path / "ds", causal_rows(8))
    with pytest.raises(error, match=message):
        train_from_scratch(_spec(tmp_path, **change), data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_training_split(tmp_path):
    from aicd.components.data.format import write_dataset

    write_dataset(tmp_path / "ds", {"train": [], "validation": [], "test": []}, fingerprint="empty")
    with pytest.raises(DataError, match="the train split is empty"):
        train_from_scratch(_spec(tmp_path), tmp_path / "ds", tmp_path / "out", progress=False)
