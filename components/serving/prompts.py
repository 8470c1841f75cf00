r"""The prompt the predictor feeds the model: the same rule evaluation uses, so what is served is what was gated.

Evaluation (``aicd.components.evaluation.backends.build_prompt``) renders one instruction as

- with a ``prompt_template`` (str.format with ``{instruction}``): each few-shot pair as
  ``template.format(instruction=q) + a + "\n\n"``, then ``template.format(instruction=x)``
  (tokenized with the tokenizer's special tokens); the system prompt is not used;
- else with the tokenizer's chat template: ``[system] + shots as user/assistant turns + [user]``;
- else (no chat template): ``"q\na\n\n"`` per shot, then ``"x\n"`` (no system prompt).

The predictor's ``--system-prompt``, ``--prompt-template`` and ``--few-shot`` carry those settings;
:func:`chat_prompt` and :func:`completion_prompt` apply them to a request. A chat request is the
general case (the client's own turns stand where evaluation has the one instruction); a completions
request's ``prompt`` is the instruction when a template is set, and is sent as is otherwise.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.errors import ServingError

Turn = dict[str, str]


@dataclass(frozen=True)
class PromptSettings:
    system: str | None = None
    template: str | None = None
    shots: tuple[tuple[str, str], ...] = ()


class PromptError(ValueError):
    """A request that cannot be rendered under the predictor's prompt settings (answered 400)."""


def check_template(template: str, flag: str = "--prompt-template") -> str:
    """A str.format template with exactly the ``{instruction}`` field."""
    if "{instruction}" not in template:
        raise ServingError(f"{flag} {template!r} has no {{instruction}}",
                           "put {instruction} where the request goes, e.g. '### Question: {instruction}\\n### Answer:'")
    try:
        template.format(instruction="")
    except (KeyError, IndexError, ValueError) as err:
        raise ServingError(f"{flag} {template!r} is not a str.format template with only {{instruction}} ({err!r})",
                           "double other braces ({{ and }}) so only {instruction} is a field") from None
    return template


def parse_few_shot(value: str) -> tuple[tuple[str, str], ...]:
    """``--few-shot``: a JSON list of [question, answer] pairs (or {"user", "assistant"} objects), inline
    or in a file."""
    text, where = value, "--few-shot"
    if not value.lstrip().startswith("["):
        path = Path(value)
        if not path.is_file():
            raise ServingError(f"--few-shot {value!r} is neither a JSON list nor an existing file",
                               'pass a JSON list such as [["2+2?", "4"]] or the path of a file holding one')
        text, where = path.read_text(encoding="utf-8"), f"--few-shot file {path}"
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ServingError(f"{where} is not valid JSON ({err})", 'write a JSON list such as [["2+2?", "4"]]') from None
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(data if isinstance(data, list) else [None]):
        if isinstance(item, dict) and set(item) == {"user", "assistant"}:
            item = [item["user"], item["assistant"]]
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise ServingError(f"{where}: item {i} is not a [question, answer] pair of strings",
                               'write a JSON list of pairs, e.g. [["2+2?", "4"], ["3+3?", "6"]]')
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def shots_arg(shots: Sequence[Sequence[str]]) -> str:
    """The ``--few-shot`` value for ``shots`` (compact JSON, stable for identities and diffs)."""
    return json.dumps([[str(q), str(a)] for q, a in shots], ensure_ascii=False, separators=(",", ":"))


def prompt_flags(settings: PromptSettings) -> list[str]:
    """``settings`` as predictor flags, in the ``--flag=value`` form (a value may start with '-'); the
    predictor's CLI reads them back to ``settings``."""
    flags = [f"--system-prompt={settings.system}"] if settings.system else []
    if settings.template is not None:
        flags.append(f"--prompt-template={check_template(settings.template)}")
    if settings.shots:
        flags.append(f"--few-shot={shots_arg(settings.shots)}")
    return flags


def _pairs(turns: list[Turn], what: str) -> tuple[list[tuple[str, str]], str]:
    """(user, assistant) pairs and the final user turn of alternating turns."""
    rest = [t for t in turns if t["role"] != "system"]
    if not rest or rest[-1]["role"] != "user" or any(
            t["role"] != ("user" if i % 2 == 0 else "assistant") for i, t in enumerate(rest)):
        raise PromptError(f"{what}, `messages` must alternate user and assistant turns (after any system turn) "
                          "and end with a user turn")
    return [(rest[i]["content"], rest[i + 1]["content"]) for i in range(0, len(rest) - 1, 2)], rest[-1]["content"]


def chat_prompt(tokenizer: Any, turns: list[Turn], settings: PromptSettings) -> tuple[str, bool]:
    """(prompt text, add_special_tokens) of a chat request under ``settings``.

    The system prompt is used when the client sent no system turn (the client's wins); the few-shot
    pairs go before the client's first user turn.
    """
    shots = [t for q, a in settings.shots for t in ({"role": "user", "content": q},
                                                   {"role": "assistant", "content": a})]
    if settings.template is not None:
        pairs, last = _pairs(turns, "with --prompt-template")
        pairs = list(settings.shots) + pairs
        return "".join(settings.template.format(instruction=q) + a + "\n\n" for q, a in pairs) + \
            settings.template.format(instruction=last), True
    messages = list(turns)
    if settings.system and not any(t["role"] == "system" for t in messages):
        messages.insert(0, {"role": "system", "content": settings.system})
    if shots:
        first_user = next((i for i, t in enumerate(messages) if t["role"] == "user"), len(messages))
        messages[first_user:first_user] = shots
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), False
    pairs, last = _pairs(messages, "for a model without a chat template")
    return "".join(f"{q}\n{a}\n\n" for q, a in pairs) + f"{last}\n", False


def completion_prompt(prompt: str, settings: PromptSettings) -> str:
    """The text of a completions request: formatted into the template (after the shots) when one is set."""
    if settings.template is None:
        return prompt
    return "".join(settings.template.format(instruction=q) + a + "\n\n" for q, a in settings.shots) + \
        settings.template.format(instruction=prompt)
