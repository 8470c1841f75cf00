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


def score_causal_lm(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *, max_length: int = 256,
                    batch_size: int = 8, scored_logits_only: bool = True,
                    add_special_tokens: bool = False) -> tuple[list[float], list[int]]:
    """Per-example mean NLL of each response given its prompt, and the scored token counts.

    ``scored_logits_only`` runs the decoder once and applies the LM head only where a
    response token is predicted (the vocabulary projection dominates for small models);
    ``False`` computes full logits, the reference path. ``batch_size=1`` scores one at a time.
    """
    import torch

    seqs = build_sequences(tokenizer, prompts, responses, max_length, add_special_tokens)
    core = _core(model)
    head = core.get_output_embeddings()
    softcap = getattr(core.config, "final_logit_softcapping", None)
    nll, counts = [0.0] * len(seqs), [0] * len(seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    with torch.inference_mode():
        for batch in _batches(order, batch_size):
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
            rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
            if scored_logits_only and softcap is None:
                hidden = core.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = head(hidden[rows_t, cols_t - 1])
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits[rows_t, cols_t - 1]
            token_nll = -torch.log_softmax(logits.float(), dim=-1).gather(1, ids[rows_t, cols_t][:, None])[:, 0]
            per_row = torch.zeros(len(batch)).index_add_(0, rows_t, token_nll)
            for b, i in enumerate(batch):
                counts[i] = len(seqs[i][0]) - seqs[i][1]
                nll[i] = float(per_row[b]) / counts[i]
    return nll, counts


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
