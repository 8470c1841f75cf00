"""Batched inference with transformers models: scoring, greedy generation, classification.

Every function sorts its inputs by length so batches carry little padding, runs
without gradients, and returns results in the caller's order. Batched and
one-at-a-time calls give the same answers (tested): scoring pads on the right and
applies the LM head only at the scored positions; generation pads on the left and
decodes greedily.
"""

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from aicd.components.errors import EvaluationError


@dataclass
class Outputs:
    """Model outputs in input order, with the wall time of the batch each ran in."""

    texts: list[str]
    latencies_ms: list[float]
    tokens: int = 0          # generated tokens (causal LM) or input tokens (classifier)
    seconds: float = 0.0     # total wall time
    extra: dict = field(default_factory=dict)


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start:start + size]


def _core(model):
    """The transformers model under a PEFT wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def build_sequences(tokenizer, prompts: Sequence[str], responses: Sequence[str], max_length: int,
                    add_special_tokens: bool = False) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per example: prompt + response + EOS, truncated to ``max_length``."""
    out = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for prompt, response in zip(prompts, responses):
        p = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + eos
        p = p[-max(1, max_length - 1):]
        r = r[:max(1, max_length - len(p))]
        out.append((p + r, len(p)))
    return out


# Packed scoring puts several sequences in one row of at most this many tokens (or the longest sequence).
PACK_TOKENS = 512


def _pack(order: list[int], seqs, prefix: int, batch_size: int, capacity: int) -> Iterator[list[int]]:
    """Consecutive sequences (sorted by length) into rows of <= batch_size sequences and <= capacity tokens."""
    row, used = [], prefix
    for i in order:
        n = len(seqs[i][0]) - prefix
        if row and (len(row) == batch_size or used + n > capacity):
            yield row
            row, used = [], prefix
        row.append(i)
        used += n
    if row:
        yield row


def _padded_inputs(seqs, batch: list[int], pad: int):
    """Right-padded rows with a 2-D mask; (ids, model kwargs, rows, cols) of the scored positions."""
    import torch

    width = max(len(seqs[i][0]) for i in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, cols = [], []
    for b, i in enumerate(batch):
        tokens, plen = seqs[i]
        ids[b, :len(tokens)] = torch.tensor(tokens)
        mask[b, :len(tokens)] = 1
        rows += [b] * (len(tokens) - plen)
        cols += range(plen, len(tokens))
    return ids, {"attention_mask": mask}, rows, cols


def shared_prefix(seqs) -> int:
    """Length of the token prefix every sequence shares (system prompt, few-shot turns), kept inside the prompts."""
    first = seqs[0][0]
    limit = min(plen for _, plen in seqs) - 1
    n = 0
    while n < limit and all(tokens[n] == first[n] for tokens, _ in seqs):
        n += 1
    return n


def _packed_inputs(seqs, batch: list[int], prefix: int):
    """One row: the shared prefix once, then each sequence's rest (no padding).

    The 4-D mask lets every rest attend to the prefix and causally to itself only; positions
    continue from the prefix, so each sequence sees exactly what it would see alone.
    """
    import torch

    first = seqs[batch[0]][0]
    total = prefix + sum(len(seqs[i][0]) - prefix for i in batch)
    ids = first[:prefix] + [t for i in batch for t in seqs[i][0][prefix:]]
    mask = torch.zeros((total, total), dtype=torch.bool)
    mask[:prefix, :prefix] = torch.ones((prefix, prefix), dtype=torch.bool).tril()
    positions, cols, offset = list(range(prefix)), [], prefix
    for i in batch:
        tokens, plen = seqs[i]
        n = len(tokens) - prefix
        mask[offset:offset + n, :prefix] = True
        mask[offset:offset + n, offset:offset + n] = torch.ones((n, n), dtype=torch.bool).tril()
        positions += range(prefix, len(tokens))
        cols += range(offset + plen - prefix, offset + n)
        offset += n
    return (torch.tensor([ids]), {"attention_mask": mask[None, None], "position_ids": torch.tensor([positions])},
            [0] * len(cols), cols)


def score_causal_lm(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *, max_length: int = 256,
                    batch_size: int = 8, scored_logits_only: bool = True, packed: bool = True,
                    add_special_tokens: bool = False) -> tuple[list[float], list[int]]:
    """Per-example mean NLL of each response given its prompt, and the scored token counts.

    Sequences are sorted by length. ``scored_logits_only`` runs the decoder and applies the LM
    head only where a response token is predicted; ``packed`` (with ``batch_size > 1``) puts up
    to ``batch_size`` sequences in one row behind one copy of their shared prefix (the system
    prompt, few-shot turns), with a mask that keeps them apart: no compute goes to padding or
    to the same prefix twice. ``batch_size=1, scored_logits_only=False`` is the reference: one
    example at a time through the full logits.
    """
    import torch

    seqs = build_sequences(tokenizer, prompts, responses, max_length, add_special_tokens)
    if not seqs:
        return [], []
    core = _core(model)
    head = core.get_output_embeddings()
    plain_head = getattr(core.config, "final_logit_softcapping", None) is None
    pack = (packed and batch_size > 1 and scored_logits_only and plain_head
            and getattr(core.config, "_attn_implementation", "") in ("sdpa", "eager"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    prefix = shared_prefix(seqs) if pack else 0
    groups = _pack(order, seqs, prefix, batch_size, max(PACK_TOKENS, len(seqs[order[-1]][0]))) if pack \
        else _batches(order, batch_size)
    totals = torch.zeros(len(seqs), dtype=torch.float64)
    with torch.inference_mode():
        for batch in groups:
            ids, kwargs, rows, cols = _packed_inputs(seqs, batch, prefix) if pack else _padded_inputs(seqs, batch, pad)
            rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
            if scored_logits_only and plain_head:
                hidden = core.base_model(input_ids=ids, **kwargs).last_hidden_state
                logits = head(hidden[rows_t, cols_t - 1])
            else:
                logits = model(input_ids=ids, **kwargs).logits[rows_t, cols_t - 1]
            token_nll = -torch.log_softmax(logits.float(), dim=-1).gather(1, ids[rows_t, cols_t][:, None])[:, 0]
            owners = [i for i in batch for _ in range(len(seqs[i][0]) - seqs[i][1])]
            totals.index_add_(0, torch.tensor(owners), token_nll.double())
    counts = [len(tokens) - plen for tokens, plen in seqs]
    return [float(totals[i]) / counts[i] for i in range(len(seqs))], counts


def generate_greedy(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 8,
                    add_special_tokens: bool = False) -> Outputs:
    """Greedy continuations (left padding, sorted by length); equal to one-at-a-time output."""
    import torch
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
        else tokenizer.eos_token_id
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
    stop = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.pad_token_id}
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    texts, latencies = [""] * len(prompts), [0.0] * len(prompts)
    generated, started = 0, time.perf_counter()
    try:
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        for batch in _batches(order, batch_size):
            enc = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                     generation_config=config)
            elapsed = (time.perf_counter() - t0) * 1000
            for b, i in enumerate(batch):
                new = out[b, enc["input_ids"].shape[1]:].tolist()
                n = next((k for k, t in enumerate(new) if t in stop), len(new))
                generated += n
                texts[i] = tokenizer.decode(new[:n], skip_special_tokens=True).strip()
                latencies[i] = elapsed
    finally:
        tokenizer.padding_side = side
    return Outputs(texts, latencies, generated, time.perf_counter() - started)


def classify_texts(model, tokenizer, texts: Sequence[str], *, max_length: int = 256,
                   batch_size: int = 32) -> Outputs:
    """Predicted label names (the model's ``id2label``) with the class probabilities in ``extra``."""
    import torch

    id2label = _core(model).config.id2label
    labels, probs = [""] * len(texts), [None] * len(texts)
    latencies, tokens, started = [0.0] * len(texts), 0, time.perf_counter()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for batch in _batches(order, batch_size):
        enc = tokenizer([texts[i] for i in batch], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = model(**enc).logits.float()
        elapsed = (time.perf_counter() - t0) * 1000
        tokens += int(enc["attention_mask"].sum())
        p = torch.softmax(logits, dim=-1)
        for b, i in enumerate(batch):
            labels[i] = id2label[int(p[b].argmax())]
            probs[i] = p[b].tolist()
            latencies[i] = elapsed
    return Outputs(labels, latencies, tokens, time.perf_counter() - started, {"probabilities": probs})


def check_head_labels(model, labels: Sequence[str], where: str) -> None:
    """The model's classification head must know every label the task uses."""
    known = set(_core(model).config.id2label.values())
    missing = sorted(set(labels) - known)
    if missing:
        raise EvaluationError(f"{where}: the model's head has no class for label(s) {missing} "
                              f"(it knows {sorted(known)})",
                              "evaluate a model trained for the task's labels, or fix `task.labels`")
