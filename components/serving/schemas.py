"""The schemas every request body is validated against before it reaches the engine.

Each public JSON route has a strict pydantic model (types, lengths, allowed values);
:func:`validated` turns the first problem into a 400 that names the field and the rule,
never an exception text. :func:`json_depth` measures nesting before anything parses a
body, so a deeply nested document is refused with 400 instead of exhausting the parser's
recursion (the guard calls it for every POST). KServe v2 bodies are kserve's own
pydantic ``InferenceRequest``; the guard's depth limit covers them too.
"""

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_DEPTH = 32  # JSON nesting levels; the deepest valid body (a v2 [N, 1] tensor) needs 5
MAX_TEXT = 200_000  # characters of one prompt, message or correction (the body limit is the real cap)
MAX_PROMPTS = 64
MAX_MESSAGES = 256
MAX_NAME = 256

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Sampling(_Body):
    model: Name
    stream: bool | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: Annotated[str, Field(min_length=1, max_length=MAX_NAME)] | Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_NAME)]], Field(max_length=4)] | None = None
    logprobs: bool | int | None = None
    seed: int | None = None
    user: Annotated[str, Field(max_length=MAX_NAME)] | None = None
    stream_options: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


TokenIds = Annotated[list[int], Field(min_length=1, max_length=MAX_TEXT)]


class CompletionBody(_Sampling):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    echo: bool | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: Text


class Message(_Body):
    role: Literal["system", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)]


class ChatBody(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: int | None = None
    top_logprobs: int | None = None


class FeedbackBody(_Body):
    id: Annotated[str, Field(min_length=1, max_length=512)]
    rating: Literal["up", "down"]
    correction: Annotated[str, Field(max_length=20_000)] | None = None


class AdapterBody(_Body):
    name: Name
    uri: Annotated[str, Field(min_length=1, max_length=4096)]


class V2Tensor(_Body):
    name: Name
    datatype: Name
    shape: Annotated[list[Annotated[int, Field(ge=0, le=1 << 20)]], Field(max_length=8)]
    data: Annotated[list[Any], Field(max_length=1 << 16)]
    parameters: dict[str, Any] | None = None


class V2Output(_Body):
    name: Name
    parameters: dict[str, Any] | None = None


class V2Body(_Body):
    """The KServe v2 (open inference protocol) request, checked before kserve parses it."""

    id: Name | None = None
    inputs: Annotated[list[V2Tensor], Field(min_length=1, max_length=16)]
    outputs: Annotated[list[V2Output], Field(max_length=16)] | None = None
    parameters: dict[str, Any] | None = None


# What each field must be, in the words of the error message (most specific path first).
RULES = {
    "model": "is required: the base model's or an adapter's name (a non-empty string)",
    "prompt": "must be a string, a list of at most 64 strings, a list of token ids or a list of at most 64 "
              "token id lists",
    "messages": "must be a non-empty list of at most 256 {role, content} objects",
    "messages[]": "must be an object with role system, user or assistant and a content",
    "messages[].role": "must be the role system, user or assistant",
    "messages[].content": "must be a string or a list of text parts",
    "messages[].content[]": "must be a text part {\"type\": \"text\", \"text\": string}",
    "messages[].content[].type": "must be \"text\": content parts must all be text parts",
    "messages[].content[].text": "must be a string",
    "stream": "must be a boolean", "n": "must be an integer", "seed": "must be an integer",
    "temperature": "must be a number between 0 and 2", "top_p": "must be a number between 0 and 1",
    "max_tokens": "must be an integer", "max_completion_tokens": "must be an integer",
    "stop": "must be a non-empty string or a list of at most 4 of them",
    "logprobs": "must be a boolean or an integer", "user": "must be a string",
    "top_logprobs": "must be an integer", "echo": "must be a boolean", "stream_options": "must be an object",
    "presence_penalty": "must be a number between -2 and 2", "frequency_penalty": "must be a number between -2 and 2",
    "id": "must be the id of a response (its `id` field or x-request-id header)",
    "rating": "must be \"up\" or \"down\"",
    "correction": "must be a string of at most 20000 characters, or null",
    "name": "must be a non-empty string (the adapter's name)",
    "uri": "must be a non-empty string (the adapter artifact's URI)",
    "inputs": "must be a non-empty list of at most 16 tensors {name, datatype, shape, data}",
    "inputs[]": "must be a tensor {name, datatype, shape, data}",
    "inputs[].name": "must be a non-empty string", "inputs[].datatype": "must be a datatype name such as BYTES",
    "inputs[].shape": "must be a list of at most 8 non-negative integers",
    "inputs[].data": "must be a list of values", "inputs[].parameters": "must be an object",
    "outputs": "must be a list of at most 16 {\"name\": string} objects", "outputs[]": "must be {\"name\": string}",
    "outputs[].name": "must be a non-empty string", "parameters": "must be an object",
}
_FIELDS = {name for model in (CompletionBody, ChatBody, TextPart, Message, FeedbackBody, AdapterBody, V2Tensor,
                               V2Output, V2Body)
           for name in model.model_fields}
M = TypeVar("M", bound=BaseModel)


class SchemaError(ValueError):
    """A body does not match its route's schema; ``message`` names the field and the rule."""

    def __init__(self, message: str, param: str | None):
        super().__init__(message)
        self.message, self.param = message, param


def _path(loc: tuple) -> list[str | int]:
    return [part for part in loc if isinstance(part, int) or part in _FIELDS]  # drops union member tags


def _rule(path: list[str | int]) -> tuple[int, str]:
    """(length of the path prefix the rule is about, the rule), the most specific first."""
    for end in range(len(path), 0, -1):
        key = "".join("[]" if isinstance(p, int) else ("." + p if i else p) for i, p in enumerate(path[:end]))
        if key in RULES:
            return end, RULES[key]
    return len(path), "is not valid"


def _at(body: Any, path: list[str | int]) -> Any:
    for part in path:
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def _show(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else ("." + p if i else p) for i, p in enumerate(path))


def validated(model: type[M], body: dict[str, Any]) -> M:
    """``body`` as ``model``, or SchemaError naming the deepest problem's field and rule."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        errors = err.errors(include_url=False)
    first = max(errors, key=lambda e: len(_path(e["loc"])))  # the deepest is the most telling; max keeps order
    path = _path(first["loc"]) or ["body"]
    end, rule = _rule(path)
    where = path[:end]
    if first["type"] == "missing" and end == len(path):
        return_message = f"`{_show(where)}` {rule} (it is missing)"
    else:
        shown = json.dumps(_at(body, where), ensure_ascii=False, default=str)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return_message = f"`{_show(where)}` {rule}, got {shown}"
    raise SchemaError(return_message, str(where[0]))


def json_depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a JSON text (brackets inside strings skipped), counted without parsing; a
    result above ``limit`` may stop early. Linear; bodies with few brackets return at once."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return min(limit, raw.count(b"[") + raw.count(b"{"))
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in (0x5B, 0x7B) else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
