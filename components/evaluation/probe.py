"""The adapter-applied probe: an adapter that changes nothing fails the evaluation.

Adapters get silently ignored (weights whose keys match no module of the base, a
LoRA ``B`` still at zero, an adapter loaded onto another base). The probe runs the
probe prompts with the adapter and with it disabled and compares the output
logits; every prompt must change, or :class:`EvaluationError` is raised.
"""

import logging
from collections.abc import Sequence
from typing import Any

from aicd.components.errors import EvaluationError

log = logging.getLogger(__name__)
# Largest |logit difference| still counted as "unchanged" (float32 noise is ~1e-6).
TOLERANCE = 1e-4


def _logits(model, tokenizer, texts: Sequence[str], classification: bool, add_special_tokens: bool):
    import torch

    out = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=512,
                            add_special_tokens=classification or add_special_tokens)
            logits = model(**enc).logits
            out.append((logits[0] if classification else logits[0, -1]).float())
    return out


def adapter_probe(model, tokenizer, texts: Sequence[str], *, classification: bool,
                  add_special_tokens: bool = False, where: str = "adapter") -> dict[str, Any]:
    """``{passed, changed, total, max_logit_diff}``; raises EvaluationError when the adapter does nothing."""
    if not hasattr(model, "disable_adapter"):
        raise EvaluationError(f"{where}: the probe needs a PEFT model with an adapter",
                              "pass the adapter artifact written by train_adapter")
    if not texts:
        raise EvaluationError(f"{where}: no probe prompts", "set `metrics.probe_prompts` in the spec")
    with_adapter = _logits(model, tokenizer, texts, classification, add_special_tokens)
    with model.disable_adapter():
        without = _logits(model, tokenizer, texts, classification, add_special_tokens)
    diffs = [float((a - b).abs().max()) for a, b in zip(with_adapter, without)]
    changed = sum(d > TOLERANCE for d in diffs)
    result = {"passed": changed == len(texts), "changed": changed, "total": len(texts),
              "max_logit_diff": max(diffs)}
    if not result["passed"]:
        raise EvaluationError(
            f"{where}: the adapter is not applied: outputs with and without it are the same on "
            f"{len(texts) - changed} of {len(texts)} probe prompt(s) (largest logit difference {max(diffs):.2e})",
            "the adapter's weights did not load onto this base (card `base_model` differs from the base it was "
            "trained on, module names do not match, or LoRA B is still zero); retrain it on the card's base")
    log.info("adapter probe: %d/%d prompts changed (max logit diff %.3g)", changed, len(texts), max(diffs))
    return result
