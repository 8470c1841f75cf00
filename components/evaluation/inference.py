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


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Tokens ``a`` and ``b`` share from the start, leaving ``b`` at least its last token of its own."""
    n, limit = 0, min(len(a), len(b) - 1)
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def pack_rows(seqs, batch_size: int, capacity: int) -> list[list[tuple[int, int]]]:
    """Rows of (sequence index, tokens it shares with the row's previous sequence).

    Sequences in token order, so neighbours share the most (the system prompt, a question asked
    twice); at most ``batch_size`` sequences and ``capacity`` fed tokens a row. A shared token is fed
    once: its hidden states are the same for every sequence that starts with it.
    """
    rows: list[list[tuple[int, int]]] = []
    row: list[tuple[int, int]] = []
    used = 0
    for i in sorted(range(len(seqs)), key=lambda k: seqs[k][0]):
        shared = common_prefix(seqs[row[-1][0]][0], seqs[i][0]) if row else 0
        if row and (len(row) == batch_size or used + len(seqs[i][0]) - shared > capacity):
            rows.append(row)
            row, used, shared = [], 0, 0
        row.append((i, shared))
        used += len(seqs[i][0]) - shared
    return rows + [row] if row else rows


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


def _packed_inputs(seqs, row: list[tuple[int, int]]):
    """One row holding every sequence of ``row`` as a prefix tree: each feeds only the tokens it does not
    share with the previous one, at their own positions.

    The 4-D mask lets each token attend to exactly the tokens of its own sequence before it (shared
    or not), so each sequence sees what it would see alone. Returns (ids, model kwargs, scored
    positions of the row, their target tokens, their owners).
    """
    import torch

    ids: list[int] = []
    positions: list[int] = []
    where: dict[int, list[int]] = {}  # sequence -> the row position of each of its tokens
    previous = None
    for i, shared in row:
        tokens = seqs[i][0]
        where[i] = (where[previous][:shared] if shared else []) + list(range(len(ids), len(ids) + len(tokens) - shared))
        ids += tokens[shared:]
        positions += range(shared, len(tokens))
        previous = i
    mask = torch.zeros((len(ids), len(ids)), dtype=torch.bool)
    cols, targets, owners = [], [], []
    for i, _ in row:
        tokens, plen = seqs[i]
        at = torch.tensor(where[i])
        mask[at[:, None], at[None, :]] |= torch.ones((len(at), len(at)), dtype=torch.bool).tril()
        cols += [where[i][t - 1] for t in range(plen, len(tokens))]
        targets += tokens[plen:]
        owners += [i] * (len(tokens) - plen)
    kwargs = {"attention_mask": mask[None, None], "position_ids": torch.tensor([positions])}
    return torch.tensor([ids]), kwargs, cols, targets, owners


def _row_inputs(seqs, batch, pad: int, packed: bool):
    """(ids, model kwargs, rows, cols, targets, owners): the model's inputs for one batch, and for each
    scored token the position whose output predicts it, the token and its sequence."""
    if packed:
        ids, kwargs, cols, targets, owners = _packed_inputs(seqs, batch)
        return ids, kwargs, [0] * len(cols), cols, targets, owners
    ids, kwargs, rows, cols = _padded_inputs(seqs, batch, pad)
    targets = ids[rows, cols].tolist()
    owners = [i for i in batch for _ in range(len(seqs[i][0]) - seqs[i][1])]
    return ids, kwargs, rows, [c - 1 for c in cols], targets, owners


def score_causal_lm(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *, max_length: int = 256,
                    batch_size: int = 8, scored_logits_only: bool = True, packed: bool = True,
                    add_special_tokens: bool = False) -> tuple[list[float], list[int]]:
    """Per-example mean NLL of each response given its prompt, and the scored token counts.

    Sequences are sorted by length. ``scored_logits_only`` runs the decoder and applies the LM
    head only where a response token is predicted; ``packed`` (with ``batch_size > 1``) puts up
    to ``batch_size`` sequences in one row as a prefix tree (:func:`pack_rows`): the tokens they
    share from the start (the system prompt, few-shot turns, a question asked twice) once, with a
    mask that keeps them apart: no compute goes to padding or to a shared token twice.
    ``batch_size=1, scored_logits_only=False`` is the reference: one example at a time through the
    full logits.
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
    groups = pack_rows(seqs, batch_size, max(PACK_TOKENS, len(seqs[order[-1]][0]))) if pack \
        else _batches(order, batch_size)
    totals = torch.zeros(len(seqs), dtype=torch.float64)
    with torch.inference_mode():
        for batch in groups:
            ids, kwargs, rows, cols, targets, owners = _row_inputs(seqs, batch, pad, pack)
            rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
            if scored_logits_only and plain_head:
                hidden = core.base_model(input_ids=ids, **kwargs).last_hidden_state
                logits = head(hidden[rows_t, cols_t])
            else:
                logits = model(input_ids=ids, **kwargs).logits[rows_t, cols_t]
            token_nll = -torch.log_softmax(logits.float(), dim=-1).gather(1, torch.tensor(targets)[:, None])[:, 0]
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
