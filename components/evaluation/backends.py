"""What evaluate_model scores: a local transformers model or a live endpoint.

A backend turns the task's inputs (instructions or texts) into outputs (answers or
labels) and, when it can, scores reference answers (NLL). Local backends batch;
endpoints send one request per example, and any failed request fails the whole
evaluation (a partial report is never presented as complete).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicd.components.evaluation.inference import Outputs, classify_texts, generate_greedy, score_causal_lm
from aicd.components.models import format_prompt

log = logging.getLogger(__name__)


def build_prompt(tokenizer, instruction: str, template: str | None, system: str | None,
                 shots: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt for one instruction, with optional few-shot examples before it."""
    if not shots:
        return format_prompt(tokenizer, instruction, template, system)
    if template is not None:
        return "".join(template.format(instruction=q) + a + "\n\n" for q, a in shots) + \
            template.format(instruction=instruction)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}] if system else []
        for q, a in shots:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": instruction})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{q}\n{a}\n\n" for q, a in shots) + f"{instruction}\n"


def weights_mb(folder: Path, names: Sequence[str] = ("*.safetensors",)) -> float:
    return sum(p.stat().st_size for pattern in names for p in Path(folder).glob(pattern)) / 2**20


@dataclass
class Backend:
    """Base: subclasses implement predict (and score where they can)."""

    model_info: dict[str, Any]
    prompt_template: str | None = None
    sizes: dict[str, float | None] = field(default_factory=lambda: {"model_size_mb": None, "adapter_size_mb": None})

    def predict(self, inputs: Sequence[str]) -> Outputs:
        raise NotImplementedError

    def score(self, inputs: Sequence[str], targets: Sequence[str]) -> tuple[list[float], list[int]] | None:
        return None

    def example_prompt(self, instruction: str) -> str | None:
        return None


@dataclass
class CausalLMBackend(Backend):
    model: Any = None
    tokenizer: Any = None
    template: str | None = None
    system: str | None = None
    shots: Sequence[tuple[str, str]] = ()
    max_new_tokens: int = 48
    max_length: int = 256
    batch_size: int = 8

    def __post_init__(self):
        self.prompt_template = self.template if self.template is not None else \
            getattr(self.tokenizer, "chat_template", None) or "{instruction}\n"

    def example_prompt(self, instruction: str) -> str:
        return build_prompt(self.tokenizer, instruction, self.template, self.system, self.shots)

    def predict(self, inputs: Sequence[str]) -> Outputs:
        prompts = [self.example_prompt(x) for x in inputs]
        return generate_greedy(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                               batch_size=self.batch_size, add_special_tokens=self.template is not None)

    def score(self, inputs: Sequence[str], targets: Sequence[str]) -> tuple[list[float], list[int]]:
        prompts = [self.example_prompt(x) for x in inputs]
        return score_causal_lm(self.model, self.tokenizer, prompts, targets, max_length=self.max_length,
                               batch_size=self.batch_size, add_special_tokens=self.template is not None)


@dataclass
class ClassifierBackend(Backend):
    model: Any = None
    tokenizer: Any = None
    max_length: int = 256
    batch_size: int = 32

    def predict(self, inputs: Sequence[str]) -> Outputs:
        return classify_texts(self.model, self.tokenizer, inputs, max_length=self.max_length,
                              batch_size=self.batch_size)
