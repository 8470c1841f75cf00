"""Preference tuning (DPO) on peft adapters, and the preference metric, in aicd's own code.

Pairs are data set rows with ``prompt``/``chosen``/``rejected`` (labeling imports them; the
feedback collector writes them: a correction beats the served answer, a thumbs-up answer beats
a thumbs-down one to the same prompt). ``prompt`` falls back to the task's input field.

DPO (Rafailov et al. 2023): with ``s(y) = log p(y | x)`` summed over the answer's tokens and
the reference model frozen at the start point, the loss of a pair is
``-log sigmoid(beta * ((s_pol(chosen) - s_ref(chosen)) - (s_pol(rejected) - s_ref(rejected))))``.

Why not TRL's DPOTrainer: trl installs beside the pinned stack (it pins no torch), but it
brings the HF Trainer and ``datasets`` around a loss of a dozen lines. Here the reference
log-probabilities are computed once before training (the reference never changes), so a step
is one forward and backward over the pair, with no second model in memory; the prompt format
is the one training and evaluation already share (:func:`aicd.components.models.format_prompt`).
Not measured against TRL on this machine.

The preference metric is the share of held-out pairs where the model gives the chosen answer
the higher log-probability, with a bootstrap interval; :func:`preference_report` adds it to an
evaluation report and compare_models pairs it by pair id.
"""

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from aicd.components.errors import TrainingError
from aicd.components.models import format_prompt
from aicd.components.spec import MethodSpec, Spec, TaskSpec

log = logging.getLogger(__name__)
PAIR_BATCH = 4


@dataclass(frozen=True)
class Pair:
    id: str
    prompt: str
    chosen: str
    rejected: str


def preference_pairs(rows: list[dict[str, Any]], task: TaskSpec) -> list[Pair]:
    """The rows that are preference pairs (a non-empty ``rejected`` differing from ``chosen``)."""
    inp, out = task.fields
    pairs = []
    for i, row in enumerate(rows):
        rejected, chosen = row.get("rejected"), row.get("chosen") or row.get(out)
        if isinstance(rejected, str) and rejected.strip() and isinstance(chosen, str) and chosen != rejected:
            pairs.append(Pair(str(row.get("id", i)), str(row.get("prompt") or row[inp]), chosen, rejected))
    return pairs


def _encode(tokenizer, task: TaskSpec, prompt: str, answer: str) -> tuple[list[int], int]:
    """Token ids of prompt + answer (+ eos), and where the answer starts (as encode_causal does)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt_ids = tokenizer(format_prompt(tokenizer, prompt, task.prompt_template, task.system_prompt),
                           add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + eos
    ids = (prompt_ids + answer_ids)[:task.max_length]
    return ids, min(len(prompt_ids), len(ids) - 1)


def _keeps_logits(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs do; peft passes it on)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def answer_logprobs(model, tokenizer, task: TaskSpec, prompts: list[str], answers: list[str]):
    """``log p(answer | prompt)`` summed over the answer's tokens, one value per row (a tensor).

    Only the positions from the earliest answer on go through the vocabulary projection and the
    softmax (``logits_to_keep``): with a system prompt, most of a pair's tokens are prompt, and
    SmolLM2's 576 x 49k projection is about a fifth of its weights a token (estimated from the
    shapes, not timed on its own).
    """
    import torch

    encoded = [_encode(tokenizer, task, p, a) for p, a in zip(prompts, answers)]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    target = torch.zeros((len(encoded), width), dtype=torch.bool)
    for row, (seq, start) in enumerate(encoded):
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
        target[row, max(start, 1):len(seq)] = True
    ids, mask, target = ids.to(device), mask.to(device), target.to(device)
    first = min(max(start, 1) for _, start in encoded)  # the earliest answer token: logits from first - 1 on
    keep = {"logits_to_keep": width - first + 1} if _keeps_logits(model) else {}
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **keep).logits[:, :-1].float()
    cut = width - logits.shape[1]  # logits[:, j] predicts the token at cut + j
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, cut:, None]).squeeze(-1)
    return (logp * target[:, cut:]).sum(-1)


def pair_logprobs(model, tokenizer, task: TaskSpec, pairs: list[Pair]):
    """(chosen, rejected) log-probabilities of a batch of pairs, in one forward pass."""
    prompts = [p.prompt for p in pairs]
    both = answer_logprobs(model, tokenizer, task, prompts + prompts,
                           [p.chosen for p in pairs] + [p.rejected for p in pairs])
    return both[:len(pairs)], both[len(pairs):]


def preference_scores(model, tokenizer, task: TaskSpec, pairs: list[Pair]) -> list[float]:
    """1.0 where the model gives the chosen answer the higher log-probability, else 0.0."""
    import torch

    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), PAIR_BATCH):
            chosen, rejected = pair_logprobs(model, tokenizer, task, pairs[start:start + PAIR_BATCH])
            out += [float(c > r) for c, r in zip(chosen.tolist(), rejected.tolist())]
    return out


def preference_report(model, tokenizer, spec: Spec, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``{ids, scores, value, low, high, n}`` on the rows' pairs, or None when they hold none."""
    from aicd.components.evaluation import metrics as M

    pairs = preference_pairs(rows, spec.task)
    if not pairs:
        return None
    scores = preference_scores(model, tokenizer, spec.task, pairs)
    values = np.asarray(scores)
    low, high = M.interval(values[M.resample_indices(len(values), spec.metrics.bootstrap_samples,
                                                     spec.metrics.seed)].mean(axis=1))
    return {"ids": [p.id for p in pairs], "scores": scores, "value": float(values.mean()), "low": low,
            "high": high, "n": len(pairs)}


def dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta: float):
    """The mean DPO loss of a batch, and the share of pairs whose implicit reward prefers chosen."""
    import torch.nn.functional as F

    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return -F.logsigmoid(margin).mean(), float((margin > 0).float().mean())


def _batches(n: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of pair indices: epochs of a seeded shuffle, cut into PAIR_BATCH."""
    rng, order, out = random.Random(seed), [], []
    while len(out) < steps:
        if len(order) < PAIR_BATCH:
            fresh = list(range(n))
            rng.shuffle(fresh)
            order += fresh
        out.append(order[:min(PAIR_BATCH, n)])
        order = order[min(PAIR_BATCH, n):]
    return out


def reference_logprobs(model, tokenizer, task: TaskSpec, pairs: list[Pair], used: list[int]):
    """The reference's (chosen, rejected) log-probabilities of every pair (NaN for pairs no step uses),
    from ``model`` as it is now: called before the first step, the reference is the starting point."""
    import torch

    device = next(model.parameters()).device
    chosen, rejected = (torch.full((len(pairs),), float("nan"), device=device) for _ in range(2))
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(used), PAIR_BATCH):
            index = used[start:start + PAIR_BATCH]
            chosen[index], rejected[index] = pair_logprobs(model, tokenizer, task, [pairs[i] for i in index])
    return chosen, rejected


def train_dpo(spec: Spec, rows: list[dict[str, Any]], method: MethodSpec, model, tokenizer) -> dict[str, Any]:
    """Train ``model`` (a peft model, adapter trainable) with DPO on the rows' pairs; the figures.

    The reference is the model as it starts (the champion adapter, or the base when the LoRA
    starts at zero): its log-probabilities are computed once, before the first step.
    """
    import torch

    from aicd.components.training.loop import make_scheduler

    t = spec.training
    pairs = preference_pairs(rows, spec.task)
    if not pairs:
        raise TrainingError(f"method {method.name!r} is dpo, but the train split holds no preference pairs "
                            "(rows with `rejected`)", "collect feedback or import labeled pairs first, or use lora")
    steps = t.max_steps or max(1, int(t.epochs * -(-len(pairs) // PAIR_BATCH)))
    batches = _batches(len(pairs), steps, t.seed)
    ref_chosen, ref_rejected = reference_logprobs(model, tokenizer, spec.task, pairs,
                                                  sorted({i for batch in batches for i in batch}))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=method.learning_rate or t.learning_rate, weight_decay=t.weight_decay)
    scheduler = make_scheduler(optimizer, t.scheduler, t.warmup_ratio, steps)
    model.train()
    losses, began = [], time.perf_counter()
    for step, index in enumerate(batches):
        chosen, rejected = pair_logprobs(model, tokenizer, spec.task, [pairs[i] for i in index])
        loss, agree = dpo_loss(chosen, rejected, ref_chosen[index], ref_rejected[index], method.beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        log.debug("dpo step %d/%d: loss %.4f, reward agrees on %.2f", step + 1, steps, losses[-1], agree)
    model.eval()
    log.info("dpo %s on %d pairs: %d steps, loss %.4f -> %.4f", method.name, len(pairs), steps, losses[0], losses[-1])
    return {"steps": steps, "losses": losses, "seconds": time.perf_counter() - began, "pairs": len(pairs)}

