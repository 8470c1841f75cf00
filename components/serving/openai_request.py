"""What an OpenAI request asks for, checked field by field: every field is honoured or refused.

``SUPPORTED`` lists the fields each route understands; any other field with a value (not
null) is refused with a 400 that names it, so nothing a client sends is silently ignored.
When ``temperature`` is absent the predictor decodes greedily (OpenAI's default is 1): it
serves what evaluation gated, and evaluation decodes greedily. ``user`` is recorded with
the request in the payload log.
"""

import json
from dataclasses import dataclass, replace
from typing import Any

from aicd.components.serving.decoding import SEED_MODULUS, Sampling

COMMON = ("model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "logprobs",
          "seed", "user", "presence_penalty", "frequency_penalty")
SUPPORTED = {
    "completions": frozenset((*COMMON, "prompt", "echo")),
    "chat": frozenset((*COMMON, "messages", "max_completion_tokens", "top_logprobs")),
}
MAX_TOP_LOGPROBS = {"completions": 5, "chat": 20}
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclass(frozen=True)
class Options:
    """The decoding options of one request, validated."""

    max_tokens: int
    n: int
    stop: tuple[str, ...]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False

    def sampling_of(self, choice: int) -> Sampling:
        """Choice ``choice``'s sampling: its own seed (seed + choice) so the n choices differ reproducibly."""
        s = self.sampling
        if s.seed is None or choice == 0:
            return s
        return replace(s, seed=(s.seed + choice) % SEED_MODULUS)


def refuse_unsupported(body: dict, route: str) -> None:
    supported = SUPPORTED[route]
    for key, value in body.items():
        if key not in supported and value is not None:
            raise ApiError(400, f"`{key}` is not supported by this predictor; remove it (supported fields: "
                           f"{', '.join(sorted(supported))})", key)


def integer(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"`{key}` must be an integer, got {json.dumps(value)}", key)
    if not low <= value <= high:
        raise ApiError(400, f"`{key}` must be between {low} and {high}, got {value}", key)
    return value


def number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            (low < value if low_open else low <= value) and value <= high):
        side = "above" if low_open else "from"
        raise ApiError(400, f"`{key}` must be a number {side} {low:g} to {high:g}, got {json.dumps(value)}", key)
    return float(value)


def _flag(body: dict, key: str) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"`{key}` must be true or false, got {json.dumps(value)}", key)
    return bool(value)


def stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    found = [stop] if isinstance(stop, str) else stop
    if not isinstance(found, list) or len(found) > 4 or not all(isinstance(s, str) and s for s in found):
        raise ApiError(400, "`stop` must be a non-empty string or a list of at most 4 of them", "stop")
    return tuple(found)


def _logprobs(body: dict, route: str) -> int | None:
    """How many alternatives per token (None: no log-probabilities)."""
    top = MAX_TOP_LOGPROBS[route]
    if route == "completions":
        value = body.get("logprobs")
        if value is None or value is False:
            return None
        return integer(body, "logprobs", 0, 0, top)
    wanted = _flag(body, "logprobs")
    if body.get("top_logprobs") is not None and not wanted:
        raise ApiError(400, "`top_logprobs` needs `logprobs: true`; send both or neither", "top_logprobs")
    return integer(body, "top_logprobs", 0, 0, top) if wanted else None


def _stream(body: dict) -> tuple[bool, bool]:
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise ApiError(400, "`stream_options` is only allowed with `stream: true`", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise ApiError(400, "`stream_options` supports only {\"include_usage\": true|false}", "stream_options")
    return stream, _flag(options, "include_usage") if "include_usage" in options else False


def options(body: dict, route: str, limit: int, max_n: int) -> Options:
    """The request's decoding options (ApiError 400 naming the first bad field)."""
    refuse_unsupported(body, route)
    echo = _flag(body, "echo")
    stream, include_usage = _stream(body)
    logprobs = _logprobs(body, route)
    if stream and (logprobs is not None or echo):
        name = "echo" if echo else "logprobs"
        raise ApiError(400, f"`{name}` is not supported with `stream: true`; send stream=false to get it", name)
    if route == "chat":
        max_tokens = _chat_max_tokens(body, limit)
    else:
        max_tokens = integer(body, "max_tokens", min(16, limit), 0 if echo else 1, limit)
    seed = body.get("seed")
    if seed is not None:
        integer(body, "seed", 0, *SEED_RANGE)
    sampling = Sampling(temperature=number(body, "temperature", 0.0, 0.0, 2.0),
                        top_p=number(body, "top_p", 1.0, 0.0, 1.0, low_open=True), seed=seed,
                        logprobs=logprobs, echo=echo,
                        presence_penalty=number(body, "presence_penalty", 0.0, -2.0, 2.0),
                        frequency_penalty=number(body, "frequency_penalty", 0.0, -2.0, 2.0))
    n = integer(body, "n", 1, 1, max_n)
    _refuse_sampling_without_temperature(sampling, n)
    return Options(max_tokens=max_tokens, n=n, stop=stops(body),
                   sampling=sampling, stream=stream, include_usage=include_usage)


def _chat_max_tokens(body: dict, limit: int) -> int:
    """``max_completion_tokens`` or its older name ``max_tokens``; both sent must agree."""
    new = integer(body, "max_completion_tokens", 0, 1, limit) if body.get("max_completion_tokens") is not None \
        else None
    old = integer(body, "max_tokens", 0, 1, limit) if body.get("max_tokens") is not None else None
    if new is not None and old is not None and new != old:
        raise ApiError(400, f"`max_tokens` ({old}) and `max_completion_tokens` ({new}) differ; send one of them",
                       "max_completion_tokens")
    return new if new is not None else old if old is not None else min(128, limit)


def _refuse_sampling_without_temperature(sampling: Sampling, n: int) -> None:
    """Greedy decoding (temperature absent or 0) gives one answer: n > 1 and top_p < 1 would do nothing."""
    if sampling.temperature > 0:
        return
    if n > 1:
        raise ApiError(400, f"`n` is {n} but decoding is greedy (temperature absent or 0), so every choice would be "
                       "the same; set temperature > 0 to sample n different choices", "n")
    if sampling.top_p < 1.0:
        raise ApiError(400, f"`top_p` is {sampling.top_p:g} but decoding is greedy (temperature absent or 0), so it "
                       "would do nothing; set temperature > 0 to sample with top_p", "top_p")


def prompts(body: dict, max_prompts: int, vocab: int) -> list[str | list[int]]:
    """The completions prompts: strings, or token id lists (as lm-evaluation-harness sends them)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(_is_id(t) for t in prompt)):
        found: list[Any] = [prompt]
    else:
        found = prompt if isinstance(prompt, list) else []
    if not found or not all(isinstance(p, str) or (isinstance(p, list) and p and all(_is_id(t) for t in p))
                            for p in found):
        raise ApiError(400, "`prompt` must be a string, a list of strings, a list of token ids or a list of "
                       "token id lists", "prompt")
    if len(found) > max_prompts:
        raise ApiError(400, f"`prompt` lists {len(found)} prompts; send at most {max_prompts} per request", "prompt")
    for p in found:
        bad = [] if isinstance(p, str) else [t for t in p if not 0 <= t < vocab]
        if bad:
            raise ApiError(400, f"`prompt` holds token id {bad[0]}, outside this model's vocabulary "
                           f"(0 to {vocab - 1})", "prompt")
    return found


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
