r"""OpenAI response bodies: choices, log-probabilities, exact usage, and server-sent event streams.

Log-probabilities follow the two shapes of the API reference: the legacy completions object
(``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``; with ``echo`` the prompt
tokens come first and the first has ``null``) and the chat ``logprobs.content`` list. A stream
is ``data: {json}\n\n`` chunks ending with ``data: [DONE]``; with
``stream_options.include_usage`` a last chunk carries ``usage`` and no choices.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aicd.components.serving.decoding import GenItem, GenResult, TokenLogprob


def usage(prompt_tokens: int, results: Sequence[GenResult]) -> dict[str, int]:
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def completion_logprobs(tokenizer, result: GenResult) -> dict[str, Any] | None:
    """The legacy ``logprobs`` object of one completions choice (None when not asked)."""
    if result.tokens is None:
        return None
    entries: list[TokenLogprob] = list(result.prompt or ()) + list(result.tokens)
    pieces = [tokenizer.decode([e.token]) for e in entries]
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    tops = [None if e.logprob is None else {tokenizer.decode([t]): lp for t, lp in e.top} for e in entries]
    return {"tokens": pieces, "token_logprobs": [e.logprob for e in entries], "top_logprobs": tops,
            "text_offset": offsets}


def _chat_token(tokenizer, token: int, logprob: float) -> dict[str, Any]:
    piece = tokenizer.decode([token])
    return {"token": piece, "logprob": logprob, "bytes": list(piece.encode("utf-8"))}


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


def with_sinks(items: list[GenItem], stream: Stream) -> list[GenItem]:
    return [GenItem(i.prompt_ids, i.max_tokens, i.stop, i.sampling, stream.sink(k)) for k, i in enumerate(items)]
