"""Padding-free packing: the block-diagonal mask makes packed loss equal per-example loss."""

import pytest
import torch

from aicd.components.models import load_causal_lm
from aicd.components.spec import TaskSpec
from aicd.components.training.examples import encode_rows
from aicd.components.training.loop import summed_loss
from aicd.components.training.packing import block_diagonal_mask, mask_format, pack, pad
from test_training_data import causal_rows


def test_block_diagonal_mask():
    mask = block_diagonal_mask([2, 3])[0, 0]
    allowed = (mask == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0],
                       [0, 0, 1, 0, 0],
                       [0, 0, 1, 1, 0],
                       [0, 0, 1, 1, 1]]
    assert mask.min().item() == torch.finfo(torch.float32).min
    assert (block_diagonal_mask([2, 3], torch.bool)[0, 0].int().tolist()) == allowed


@pytest.mark.parametrize("attention, dtype, with_mask", [
    ("sdpa", torch.bool, True), ("eager", torch.float32, True), ("flash_attention_2", None, False),
])
def test_mask_format_follows_the_attention_implementation(tiny_causal_lm, attention, dtype, with_mask):
    model, _, _ = load_causal_lm(str(tiny_causal_lm))
    model.config._attn_implementation = attention  # no FlashAttention here: only the choice is checked
    assert mask_format(model) == (dtype, with_mask)


def test_pack_restarts_positions_and_keeps_labels(tiny_causal_lm, support_bot_spec):
    _, tok, _ = load_causal_lm(str(tiny_causal_lm))
    support_bot_spec["task"]["max_length"] = 256
    examples = encode_rows(causal_rows(3), tok, TaskSpec.model_validate(support_bot_spec["task"])).examples
    batch = pack(examples)
    lengths = [ex.length for ex in examples]
    assert batch["input_ids"].shape == (1, sum(lengths))  # no padding at all
    assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    assert batch["attention_mask"].shape == (1, 1, sum(lengths), sum(lengths))


@pytest.fixture(scope="module")
def model_and_examples(tiny_causal_lm):
    model, tok, _ = load_causal_lm(str(tiny_causal_lm))
    task = TaskSpec(type="causal-lm", max_length=256, system_prompt="Be brief.")
    rows = causal_rows(6)
    for i, row in enumerate(rows):  # varied lengths
        row["response"] = row["response"] + " really" * i
    return model, tok, encode_rows(rows, tok, task).examples


@pytest.mark.parametrize("attention, mask_dtype, only_response_logits", [
    ("sdpa", torch.float32, True), ("sdpa", torch.bool, True), ("eager", torch.float32, True),
    ("sdpa", torch.bool, False),
])
def test_packed_loss_equals_per_example_loss(model_and_examples, monkeypatch, attention, mask_dtype,
                                             only_response_logits):
    model, tok, examples = model_and_examples
    model.set_attn_implementation(attention)
    monkeypatch.setattr("aicd.components.training.loop._keeps_logits", lambda m: only_response_logits)
    with torch.no_grad():
        alone = sum(summed_loss(model, pad([ex], tok.pad_token_id)).item() for ex in examples)
        padded = summed_loss(model, pad(examples, tok.pad_token_id)).item()
        packed = summed_loss(model, pack(examples, mask_dtype)).item()
    assert packed == pytest.approx(alone, rel=1e-5, abs=1e-5)
    assert padded == pytest.approx(alone, rel=1e-5, abs=1e-5)


def test_without_the_block_mask_examples_leak(model_and_examples):
    """Control: restarting position_ids under a plain causal mask lets examples attend across."""
    model, tok, examples = model_and_examples
    model.set_attn_implementation("sdpa")
    batch = pack(examples)
    n = batch["input_ids"].shape[1]
    causal = torch.zeros(1, 1, n, n).masked_fill_(~torch.ones(n, n, dtype=torch.bool).tril(), torch.finfo().min)
    with torch.no_grad():
        alone = sum(summed_loss(model, pad([ex], tok.pad_token_id)).item() for ex in examples)
        leaky = summed_loss(model, {**batch, "attention_mask": causal}).item()
    assert abs(leaky - alone) > 1e-3


def test_packed_gradients_equal_per_example_gradients(model_and_examples):
    model, tok, examples = model_and_examples
    model.set_attn_implementation("sdpa")

    def grads(batches):
        model.zero_grad()
        for batch in batches:
            summed_loss(model, batch).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    alone = grads([pad([ex], tok.pad_token_id) for ex in examples])
    packed = grads([pack(examples)])
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-6)
