"""DPO pieces on the tiny random Llama: pairs from rows, the loss, log-probabilities, a short run."""

import math

import pytest
import torch

from aicd.components.errors import TrainingError
from aicd.components.spec import parse_spec
from aicd.components.training.preference import (
    Pair,
    _batches,
    answer_logprobs,
    dpo_loss,
    pair_logprobs,
    preference_pairs,
    preference_report,
)


def test_pairs_come_from_rows_with_a_rejected_answer(support_bot_spec):
    task = parse_spec(support_bot_spec).task
    rows = [{"id": "a", "instruction": "Hi?", "response": "Hello.", "prompt": "Hi?", "chosen": "Hello.",
             "rejected": "Go away."},
            {"id": "b", "instruction": "Hi?", "response": "Hello.", "prompt": None, "chosen": None, "rejected": None},
            {"id": "c", "instruction": "Yo?", "response": "Hey.", "rejected": "Hey."},  # same answer: no preference
            {"id": "d", "instruction": "Yo?", "response": "Hey.", "rejected": "Nope."}]  # prompt/chosen from fields
    assert preference_pairs(rows, task) == [Pair("a", "Hi?", "Hello.", "Go away."), Pair("d", "Yo?", "Hey.", "Nope.")]


def test_dpo_loss_by_hand():
    chosen, rejected = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    ref = torch.tensor([-1.5, -1.5])
    loss, agree = dpo_loss(chosen, rejected, ref, ref, beta=0.5)
    # margins 0.5 * (1) = 0.5 and 0.5 * (-2) = -1
    expected = (-math.log(1 / (1 + math.exp(-0.5))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert float(loss) == pytest.approx(expected) and agree == 0.5


def test_batches_cover_every_pair_each_epoch():
    batches = _batches(6, 6, seed=3)
    assert all(len(b) == 4 for b in batches)
    flat = [i for b in batches for i in b]
    assert sorted(flat[:6]) == list(range(6)) and sorted(flat[12:18]) == list(range(6))
    assert _batches(6, 6, seed=3) == batches


def test_answer_logprobs_count_only_the_answer(tiny_causal_lm, support_bot_spec):
    from aicd.components.models import load_causal_lm

    support_bot_spec["task"]["max_length"] = 256
    task = parse_spec(support_bot_spec).task
    model, tok, _ = load_causal_lm(str(tiny_causal_lm))
    with torch.no_grad():
        one = answer_logprobs(model, tok, task, ["What is AI?"], ["A field of study."])
        batched = answer_logprobs(model, tok, task, ["What is AI?", "Hi there, how are you today?"],
                                  ["A field of study.", "Fine."])
        chosen, rejected = pair_logprobs(model, tok, task, [Pair("x", "What is AI?", "A field of study.", "No.")])
    assert float(one[0]) < 0 and float(batched[0]) == pytest.approx(float(one[0]), abs=1e-4)  # padding ignored
    assert float(chosen[0]) == pytest.approx(float(one[0]), abs=1e-4) and float(rejected[0]) < 0


def test_dpo_on_a_split_without_pairs_is_a_clear_error(tiny_causal_lm, support_bot_spec, tmp_path):
    from aicd.components.data.format import write_dataset
    from aicd.components.training.adapter import train_adapter

    support_bot_spec["candidates"] = [{"name": "tiny", "uri": str(tiny_causal_lm)}]
    support_bot_spec["training"].update(methods=[{"name": "dpo", "method": "dpo", "target_modules": ["q_proj"]}],
                                        checkpoint={"root": str(tmp_path / "ck")})
    rows = [{"id": "a", "instruction": "Hi?", "response": "Hello.", "source": "t", "topic": "x"}]
    write_dataset(tmp_path / "ds", {"train": rows, "validation": rows, "test": rows}, task="causal-lm")
    with pytest.raises(TrainingError, match="the train split holds no preference pairs"):
        train_adapter(support_bot_spec, tmp_path / "ds", "dpo", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_preference_report_is_none_without_pairs(tiny_causal_lm, support_bot_spec):
    assert preference_report(None, None, parse_spec(support_bot_spec), [{"instruction": "a", "response": "b"}]) is None


def test_answer_logprobs_project_only_the_answer_positions_and_agree_with_all(tiny_causal_lm, support_bot_spec):
    """logits_to_keep leaves the prompt out of the vocabulary projection: same sums as projecting all."""
    from aicd.components.models import load_causal_lm
    from aicd.components.training.preference import _encode, _keeps_logits

    support_bot_spec["task"]["max_length"] = 256
    task = parse_spec(support_bot_spec).task
    model, tok, _ = load_causal_lm(str(tiny_causal_lm))
    prompts, answers = ["What is AI?", "Hi there, how are you today?"], ["A field of study.", "Fine, thanks."]
    assert _keeps_logits(model)
    expected = []
    with torch.no_grad():
        got = answer_logprobs(model, tok, task, prompts, answers)
        for prompt, answer in zip(prompts, answers):
            seq, start = _encode(tok, task, prompt, answer)
            logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0, :-1], -1)
            expected.append(sum(float(logp[i - 1, seq[i]]) for i in range(start, len(seq))))
    assert got.tolist() == pytest.approx(expected, abs=1e-4)
