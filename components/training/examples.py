"""Rows of a data set turned into training examples (token ids and labels).

Causal-LM instruction tuning: the prompt is the spec's template or the tokenizer's
chat template (through :func:`aicd.components.models.format_prompt`, as evaluation and
serving build it), the target is the response plus end-of-sequence, and only response
tokens carry a label. Text classification: the text and the index of its label.

Each example's first label is always ignored (-100): nothing predicts the first token,
so an example gives the same loss alone, padded, or packed after another one.
"""

import logging
from dataclasses import dataclass, field

from aicd.components.errors import DataError, TrainingError
from aicd.components.models import format_prompt
from aicd.components.spec import TaskSpec

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int] | int  # per-token labels (causal LM) or one class index
    id: str = ""

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodedSplit:
    examples: list[Example]
    dropped: dict[str, int] = field(default_factory=dict)


def model_max_length(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def check_length(task: TaskSpec, model) -> None:
    limit = model_max_length(model)
    if limit is not None and task.max_length > limit:
        raise TrainingError(f"`task.max_length` is {task.max_length}, above the model's limit of {limit} tokens",
                            f"set task.max_length to {limit} or less")


def _target_count(ex: Example) -> int:
    if isinstance(ex.labels, int):
        return 1
    return sum(1 for label in ex.labels if label != IGNORE)


def encode_causal(rows: list[dict], tokenizer, task: TaskSpec) -> EncodedSplit:
    """Prompt + response (+ eos) token ids; labels only on the response."""
    inp, out = task.fields
    examples, dropped = [], {"no response tokens within max_length": 0}
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for row in rows:
        prompt = format_prompt(tokenizer, str(row[inp]), task.prompt_template, task.system_prompt)
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        response_ids = tokenizer(str(row[out]), add_special_tokens=False)["input_ids"] + eos
        ids = (prompt_ids + response_ids)[: task.max_length]
        labels = ([IGNORE] * len(prompt_ids) + response_ids)[: task.max_length]
        labels[0] = IGNORE
        ex = Example(ids, labels, str(row.get("id", "")))
        if _target_count(ex) == 0:
            dropped["no response tokens within max_length"] += 1
            continue
        examples.append(ex)
    return EncodedSplit(examples, {k: v for k, v in dropped.items() if v})


def encode_classification(rows: list[dict], tokenizer, task: TaskSpec) -> EncodedSplit:
    inp, out = task.fields
    index = {name: i for i, name in enumerate(task.labels)}
    unknown = sorted({str(row[out]) for row in rows if str(row[out]) not in index})
    if unknown:
        raise DataError(f"labels {unknown} in the data are not in `task.labels` {task.labels}",
                        "add them to task.labels or map them with data.sources[].label_map")
    examples = []
    for row in rows:
        ids = tokenizer(str(row[inp]), truncation=True, max_length=task.max_length)["input_ids"]
        examples.append(Example(ids, index[str(row[out])], str(row.get("id", ""))))
    return EncodedSplit(examples)


def encode_rows(rows: list[dict], tokenizer, task: TaskSpec, split: str = "train") -> EncodedSplit:
    """Encode one split's rows for the task; raise on an empty or unusable split."""
    if not rows:
        raise DataError(f"the {split} split is empty: there is nothing to train on",
                        "add data or lower data.quality thresholds, then build the data set again")
    inp, out = task.fields
    missing = [f for f in (inp, out) if f not in rows[0]]
    if missing:
        raise DataError(f"the {split} split has no column {', '.join(missing)} (columns: {', '.join(rows[0])})",
                        "set task.*_field to the right columns or map them in data.sources[].columns")
    encoded = (encode_causal if task.type == "causal-lm" else encode_classification)(rows, tokenizer, task)
    if encoded.dropped:
        log.warning("%s split: dropped %s", split, encoded.dropped)
    if not encoded.examples:
        raise DataError(f"no example of the {split} split fits in task.max_length={task.max_length} tokens",
                        "raise task.max_length or shorten the prompt template")
    return encoded


def target_count(examples: list[Example]) -> int:
    """Number of loss terms: response tokens (causal LM) or examples (classification)."""
    return sum(_target_count(ex) for ex in examples)
