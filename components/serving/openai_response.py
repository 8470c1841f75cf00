r"""OpenAI response bodies: choices, log-probabilities, exact usage, and server-sent event streams.

Log-probabilities follow the two shapes of the API reference: the legacy completions object
(``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``; with ``echo`` the prompt
tokens come first and the first has ``null``) and the chat ``logprobs.content`` list. A stream
is ``data: {json}\n\n`` chunks ending with ``data: [DONE]``; with
``stream_options.include_usage`` a last chunk carries ``usage`` and no choices.
"""

import asyncio
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aicd.components.serving.decoding import GenItem, GenResult, TokenLogprob


def usage(prompt_tokens: int, results: Sequence[GenResult]) -> dict[str, int]:
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


@functools.cache
def _byte_level() -> dict[str, int]:
    """GPT-2's byte-level alphabet (character -> byte) that byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    extra = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(extra)}}


def token_bytes(tokenizer, token: int) -> list[int]:
    """The UTF-8 bytes a token stands for (a byte-level token may hold part of a character)."""
    raw = tokenizer.convert_ids_to_tokens(token)
    alphabet = _byte_level()
    if isinstance(raw, str) and raw and all(c in alphabet for c in raw) and token not in tokenizer.all_special_ids:
        return [alphabet[c] for c in raw]
    return list(tokenizer.decode([token], skip_special_tokens=True).encode("utf-8"))  # EOS: no bytes, as its text


def _piece(tokenizer, token: int, prompt: bool) -> str:
    """A token as text: prompt tokens as they are, generated ones as the answer's text has them."""
    return tokenizer.decode([token], skip_special_tokens=not prompt)


def _top_dict(tokenizer, top) -> dict[str, float]:
    """Alternatives by text; tokens that read the same keep the highest log-probability (``top`` is sorted)."""
    found: dict[str, float] = {}
    for token, logprob in top:
        found.setdefault(tokenizer.decode([token]), logprob)
    return found


def completion_logprobs(tokenizer, result: GenResult) -> dict[str, Any] | None:
    """The legacy ``logprobs`` object of one completions choice (None when not asked)."""
    if result.tokens is None:
        return None
    entries: list[TokenLogprob] = list(result.prompt or ()) + list(result.tokens)
    pieces = [_piece(tokenizer, e.token, k < len(result.prompt or ())) for k, e in enumerate(entries)]
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    tops = [None if e.logprob is None else _top_dict(tokenizer, e.top) for e in entries]
    return {"tokens": pieces, "token_logprobs": [e.logprob for e in entries], "top_logprobs": tops,
            "text_offset": offsets}


def _chat_token(tokenizer, token: int, logprob: float) -> dict[str, Any]:
    return {"token": _piece(tokenizer, token, False), "logprob": logprob, "bytes": token_bytes(tokenizer, token)}


def chat_logprobs(tokenizer, result: GenResult) -> dict[str, Any] | None:
    if result.tokens is None:
        return None
    return {"content": [{**_chat_token(tokenizer, e.token, e.logprob),
                         "top_logprobs": [_chat_token(tokenizer, t, lp) for t, lp in e.top]} for e in result.tokens],
            "refusal": None}


def sse(payload: dict[str, Any] | str) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


class Stream:
    """Feeds the items' sinks into one event stream, in the order pieces arrive.

    ``chunk(index, text, result)`` builds the chunk of one piece (``result`` on the last one);
    ``observe_first`` and ``observe_gap`` receive the time to the first piece and between pieces.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int):
        self.loop, self.count = loop, count
        self.queue: asyncio.Queue = asyncio.Queue()

    def sink(self, index: int) -> Callable[[str, GenResult | None], None]:
        def put(text: str, result: GenResult | None) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, text, result))
        return put

    async def events(self, run: asyncio.Task, chunk: Callable[[int, str, GenResult | None], dict],
                     observe_first: Callable[[float], None], observe_gap: Callable[[float], None],
                     started: float) -> AsyncIterator[tuple[int, str, GenResult | None, dict]]:
        finished, last = 0, None
        while finished < self.count:
            getter = asyncio.ensure_future(self.queue.get())
            done, _ = await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                run.result()  # raises the batch's error; a clean end without results is a bug
                raise RuntimeError("generation ended before every choice finished")
            index, text, result = getter.result()
            now = time.perf_counter()
            if text:
                if last is None:
                    observe_first(now - started)
                else:
                    observe_gap(now - last)
                last = now
            finished += result is not None
            yield index, text, result, chunk(index, text, result)


def with_sinks(items: list[GenItem], stream: Stream, cancel: threading.Event | None = None) -> list[GenItem]:
    return [GenItem(i.prompt_ids, i.max_tokens, i.stop, i.sampling, stream.sink(k), cancel)
            for k, i in enumerate(items)]
