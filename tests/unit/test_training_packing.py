"""Padding-free packing: the block-diagonal mask makes packed loss equal per-example loss."""

import pytest
import torch
from helpers.data import causal_rows

from aicd.components.models import load_causal_lm
from aicd.components.spec import TaskSpec
from aicd.components.training.examples import encode_rows
from aicd.components.training.loop import summed_loss
from aicd.components.training.packing import bin_rows, block_diagonal_mask, mask_format, pack, pad, row_masks


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
    lengths = [ex.length for ex in examples]
    batch = pack(examples, row_length=sum(lengths))  # room for all: one row
    assert batch["input_ids"].shape == (1, sum(lengths))  # no padding at all
    ordered = sorted(lengths, reverse=True)  # first-fit-decreasing order within the row
    assert batch["position_ids"][0].tolist() == [p for n in ordered for p in range(n)]
    assert batch["attention_mask"].shape == (1, 1, sum(lengths), sum(lengths))


@pytest.fixture(scope="module")
def model_and_examples(tiny_causal_lm):
    model, tok, _ = load_causal_lm(str(tiny_causal_lm))
    task = TaskSpec(type="causal-lm", max_length=256, system_prompt="Be brief.")
    rows = causal_rows(6)
    for i, row in enumerate(rows):  # varied lengths
        row["response"] = row["response"] + " really" * i
    return model, tok, encode_rows(rows, tok, task).examples


@pytest.mark.parametrize("attention, mask_dtype, only_response_logits, row_length", [
    ("sdpa", torch.float32, True, None), ("sdpa", torch.bool, True, None), ("eager", torch.float32, True, None),
    ("sdpa", torch.bool, False, None), ("sdpa", torch.bool, True, 10_000), ("eager", torch.float32, True, 10_000),
    ("sdpa", torch.bool, True, 1), ("eager", torch.float32, False, 300),
])
def test_packed_loss_equals_per_example_loss(model_and_examples, monkeypatch, attention, mask_dtype,
                                             only_response_logits, row_length):
    model, tok, examples = model_and_examples
    model.set_attn_implementation(attention)
    monkeypatch.setattr("aicd.components.training.loop._keeps_logits", lambda m: only_response_logits)
    with torch.no_grad():
        alone = sum(summed_loss(model, pad([ex], tok.pad_token_id)).item() for ex in examples)
        padded = summed_loss(model, pad(examples, tok.pad_token_id)).item()
        packed = summed_loss(model, pack(examples, mask_dtype, row_length=row_length)).item()
    assert packed == pytest.approx(alone, rel=1e-5, abs=1e-5)
    assert padded == pytest.approx(alone, rel=1e-5, abs=1e-5)


def test_without_the_block_mask_examples_leak(model_and_examples):
    """Control: restarting position_ids under a plain causal mask lets examples attend across."""
    model, tok, examples = model_and_examples
    model.set_attn_implementation("sdpa")
    batch = pack(examples, row_length=sum(ex.length for ex in examples))
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


@pytest.mark.parametrize("lengths, bound, rows", [
    ([5, 3, 2, 4], 7, [[0, 2], [3, 1]]),      # decreasing: 5, 4, 3 (by the 4), 2 (by the 5)
    ([4, 4, 4], 4, [[0], [1], [2]]),
    ([1, 2, 3, 4, 5, 6], 100, [[5, 4, 3, 2, 1, 0]]),
    ([3, 3, 2, 2, 2], 6, [[0, 1], [2, 3, 4]]),
])
def test_bin_rows_first_fit_decreasing(lengths, bound, rows):
    assert bin_rows(lengths, bound) == rows


@pytest.mark.parametrize("seed", range(5))
def test_rows_stay_within_the_bound_and_hold_every_example_once(seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 60, (int(torch.randint(1, 40, (1,), generator=gen)),), generator=gen).tolist()
    bound = max(lengths) + int(torch.randint(0, 80, (1,), generator=gen))
    rows = bin_rows(lengths, bound)
    assert all(sum(lengths[k] for k in row) <= bound for row in rows)
    assert sorted(k for row in rows for k in row) == list(range(len(lengths)))
    # first fit: no later row's first example would have fitted in an earlier row
    for r, row in enumerate(rows):
        for earlier in rows[:r]:
            assert lengths[row[0]] > bound - sum(lengths[k] for k in earlier)


def test_pack_rows_are_bounded_padded_and_exact(model_and_examples):
    _, _, examples = model_and_examples
    lengths = [ex.length for ex in examples]
    bound = 2 * max(lengths)
    batch = pack(examples, torch.bool, row_length=bound)
    rows, width = batch["input_ids"].shape
    assert 1 < rows < len(examples) and width <= bound
    assert batch["attention_mask"].shape == (rows, 1, width, width)
    # every example's tokens and labels appear exactly once, each from position 0
    found = []
    for r in range(rows):
        pos = batch["position_ids"][r].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0]
        for a, b in zip(starts, starts[1:] + [width]):
            ids = batch["input_ids"][r, a:b].tolist()
            match = [k for k, ex in enumerate(examples) if ex.input_ids == ids]
            if match:
                assert batch["labels"][r, a:b].tolist() == examples[match[0]].labels
                found.append(match[0])
            else:  # the row's padding: labels ignored
                assert (batch["labels"][r, a:b] == -100).all()
    assert sorted(found) == list(range(len(examples)))
    # an example never exceeds the bound: a bound below the longest example grows to it
    assert pack(examples, row_length=1)["input_ids"].shape[1] == max(lengths)


def test_row_masks_isolate_rows_and_padding():
    mask = row_masks([[2, 1], [1]], torch.bool, width=3)
    assert mask.shape == (2, 1, 3, 3)
    assert mask[0, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert mask[1, 0].int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]  # padding attends only to padding
    assert mask.any(-1).all()  # no fully masked query: no NaNs


def test_packed_rows_gradients_equal_per_example_gradients(model_and_examples):
    model, tok, examples = model_and_examples
    model.set_attn_implementation("eager")
    model.zero_grad()
    for ex in examples:
        summed_loss(model, pad([ex], tok.pad_token_id)).backward()
    alone = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    summed_loss(model, pack(examples, row_length=2 * max(ex.length for ex in examples))).backward()
    packed = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-6)
