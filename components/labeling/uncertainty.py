"""Uncertainty of the current model on each row, computed from a Model artifact.

The alternative to passing scores to export_for_labeling: the model (adapter or full
weights, digests verified by ``load_model_artifact``) scores the rows itself, through
the evaluation area's batched inference.

- text-classification: uncertainty = 1 - (p_top1 - p_top2) of the class probabilities;
- causal-lm: uncertainty = the mean NLL of the row's response given its prompt (the
  model finds the reference answer unlikely).
"""

import logging
from pathlib import Path
from typing import Any

from aicd.components.spec import TaskSpec

log = logging.getLogger(__name__)


def model_uncertainty(task: TaskSpec, model_dir: str | Path, rows: list[dict[str, Any]],
                      batch_size: int = 16) -> dict[str, float]:
    """Row id -> uncertainty (higher = the model is less sure) for rows that have the task's input."""
    from aicd.components.evaluation.inference import classify_texts, score_causal_lm
    from aicd.components.models import format_prompt, load_model_artifact

    source, target = task.fields
    if task.type == "text-classification":
        usable = [r for r in rows if r.get(source)]
        model, tokenizer, _ = load_model_artifact(model_dir, task.labels)
        out = classify_texts(model, tokenizer, [str(r[source]) for r in usable], max_length=task.max_length,
                             batch_size=batch_size)
        scores = {}
        for row, probs in zip(usable, out.extra["probabilities"]):
            top = sorted(probs, reverse=True)
            scores[str(row["id"])] = 1.0 - (top[0] - top[1])
    else:
        usable = [r for r in rows if r.get(source) and r.get(target)]
        model, tokenizer, _ = load_model_artifact(model_dir)
        prompts = [format_prompt(tokenizer, str(r[source]), task.prompt_template, task.system_prompt) for r in usable]
        nll, _ = score_causal_lm(model, tokenizer, prompts, [str(r[target]) for r in usable],
                                 max_length=task.max_length, batch_size=batch_size)
        scores = {str(r["id"]): float(v) for r, v in zip(usable, nll)}
    log.info("scored %d rows with the model at %s", len(scores), model_dir)
    return scores
