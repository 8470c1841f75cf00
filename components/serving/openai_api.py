"""OpenAI-compatible routes: /openai/v1/completions, /chat/completions and /models.

The ``model`` field picks what answers: the base model's served name or an adapter's.
Every request field is honoured or refused by name (openai_request.py: sampling, seed,
n, stop, penalties, logprobs, echo, streaming); responses carry exact ``usage``.
Every malformed request gets a 4xx with an OpenAI-shaped error
({"error": {"message", "type", "param", "code"}}), never a 500.
"""

import asyncio
import json
import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from aicd.components.errors import ServingError
from aicd.components.serving.decoding import GenItem, GenResult
from aicd.components.serving.openai_request import ApiError, Options, options, prompts
from aicd.components.serving.openai_response import (
    Stream,
    chat_logprobs,
    completion_logprobs,
    sse,
    usage,
    with_sinks,
)
from aicd.components.serving.prompts import PromptError, completion_prompt
from aicd.components.serving.prompts import chat_prompt as render_chat
from aicd.components.serving.schemas import (
    MAX_DEPTH,
    MAX_PROMPTS,
    ChatBody,
    CompletionBody,
    SchemaError,
    json_depth,
    validated,
)
from aicd.components.serving.service import Service

PREFIX = "/openai/v1"
_ROLES = {"system", "user", "assistant"}


def error_response(err: ApiError) -> JSONResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 503: "unavailable"}.get(err.status, "invalid_request_error")
    return JSONResponse({"error": {"message": err.message, "type": kind, "param": err.param, "code": err.status}},
                        status_code=err.status)


async def read_json(request: Request, schema: type[BaseModel]) -> dict[str, Any]:
    """The body as a dict, checked against its route's ``schema`` (ApiError 400 naming the field)."""
    raw = await request.body()
    if json_depth(raw) > MAX_DEPTH:
        raise ApiError(400, f"request body nests JSON more than {MAX_DEPTH} levels deep; send a flatter body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON ({err}); send a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(body).__name__}")
    try:
        validated(schema, body)
    except SchemaError as err:
        raise ApiError(400, err.message, err.param) from None
    return body


def model_name(body: dict, service: Service) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "`model` is required: the base model's or an adapter's name; served: "
                       + ", ".join(service.served()), "model")
    if not service.ready:
        raise ApiError(503, "the predictor is still loading its models; retry when /v2/health/ready answers 200")
    if service.label_of(name) is None:
        raise ApiError(404, f"model {name!r} is not served; served models: {', '.join(service.served())}", "model")
    return name


def _content(message: Any, index: int) -> tuple[str, str]:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str) or message["role"] not in _ROLES:
        raise ApiError(400, f"`messages[{index}]` must be an object with role system, user or assistant",
                       "messages")
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text is understood
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise ApiError(400, f"`messages[{index}].content` parts must all be text parts", "messages")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ApiError(400, f"`messages[{index}].content` must be a string", "messages")
    return message["role"], content


def chat_prompt(body: dict, service: Service, name: str) -> tuple[str, bool]:
    """(prompt, add_special_tokens) of a chat request: the evaluation's rule (serving/prompts.py) under
    the predictor's --system-prompt, --prompt-template and --few-shot."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list of {role, content} objects", "messages")
    turns = [dict(zip(("role", "content"), _content(m, i))) for i, m in enumerate(messages)]
    tokenizer = service.engine.template_tokenizer(service.adapter_of(name))
    try:
        return render_chat(tokenizer, turns, service.config.prompt)
    except PromptError as err:
        raise ApiError(400, str(err), "messages") from None


def tokenize(service: Service, text: str | list[int], max_tokens: int, special: bool) -> list[int]:
    ids = text if isinstance(text, list) else service.engine.tokenizer(text, add_special_tokens=special)["input_ids"]
    limit = service.engine.max_positions
    if not ids:
        raise ApiError(400, "the prompt is empty after tokenization; send some text", "prompt")
    if len(ids) + max_tokens > limit:
        raise ApiError(400, f"the prompt has {len(ids)} tokens and max_tokens is {max_tokens}: together more than "
                       f"the model's {limit}-token window; shorten the prompt or lower max_tokens")
    return ids


async def _run(service: Service, name: str, items: list[GenItem]):
    try:
        return await service.generate(name, items)
    except ServingError as err:  # the adapter was removed while the request waited, or the server stops
        if service.generation.stopping.is_set():
            raise ApiError(503, err.message + (f"; {err.hint}" if err.hint else "")) from None
        raise ApiError(404, err.message + (f"; {err.hint}" if err.hint else ""), "model") from None


def _items(ids: list[list[int]], opts: Options) -> list[GenItem]:
    """The n choices of each prompt, prompt-major (choice index = prompt * n + choice)."""
    return [GenItem(p, opts.max_tokens, opts.stop, opts.sampling_of(j)) for p in ids for j in range(opts.n)]


def _completion_choice(service: Service, index: int, result: GenResult, echo: str | None) -> dict:
    text = (echo or "") + result.text
    return {"index": index, "text": text, "logprobs": completion_logprobs(service.engine.tokenizer, result),
            "finish_reason": result.finish_reason}


def _chat_choice(service: Service, index: int, result: GenResult) -> dict:
    return {"index": index, "message": {"role": "assistant", "content": result.text, "refusal": None},
            "logprobs": chat_logprobs(service.engine.tokenizer, result), "finish_reason": result.finish_reason}


def _stream(service: Service, name: str, items: list[GenItem], head: dict, chunk_choice, opts: Options,
            prompt_tokens: int) -> StreamingResponse:
    """The answer as server-sent events; time to first piece and between pieces go to /metrics."""
    label = service.label_of(name) or name
    started = time.perf_counter()
    stream = Stream(asyncio.get_running_loop(), len(items))
    cancel = threading.Event()  # set when the client goes away: the model thread stops these rows
    run = asyncio.ensure_future(service.generate(name, with_sinks(items, stream, cancel)))
    metrics = service.metrics

    async def body():
        results: list[GenResult] = []
        try:
            async for _, _, result, choice in stream.events(
                    run, chunk_choice, metrics.first_token.labels(adapter=label).observe,
                    metrics.token_gap.labels(adapter=label).observe, started):
                results += [result] if result is not None else []
                yield sse({**head, "choices": [choice], **({"usage": None} if opts.include_usage else {})})
        except ServingError as err:
            yield sse({"error": {"message": err.message, "type": "not_found_error", "param": "model", "code": 404}})
            return
        finally:
            cancel.set()  # a no-op once every row finished; stops them when the client disconnected
        metrics.tokens.labels(adapter=label).inc(sum(r.completion_tokens for r in results))
        if opts.include_usage:
            yield sse({**head, "choices": [], "usage": usage(prompt_tokens, results)})
        yield sse("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _completion_chunk(index: int, text: str, result: GenResult | None) -> dict:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": result and result.finish_reason}


def _chat_chunks():
    """The chunk builder of one chat stream: each choice's first delta carries the role."""
    sent: set[int] = set()

    def chunk(index: int, piece: str, result: GenResult | None) -> dict:
        delta = {"content": piece} if index in sent else {"role": "assistant", "content": piece}
        sent.add(index)
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": result and result.finish_reason}
    return chunk


def _models(service: Service) -> dict:
    """Served names with their card digests; an adapter's ``parent`` is the base."""
    now, base = int(time.time()), service.config.model_name
    data = [{"id": m["name"], "object": "model", "created": now, "owned_by": "aicd", "root": base,
             "parent": base if m["adapter"] else None, "digest": m["digest"]}
            for m in (service.describe() if service.ready else [])]
    return {"object": "list", "data": data}


def build_router(service: Service) -> APIRouter:
    router = APIRouter()
    config = service.config

    async def completions(request: Request):
        try:
            body = await read_json(request, CompletionBody)
            name = model_name(body, service)
            opts = options(body, "completions", config.max_new_tokens_limit, config.max_n)
            found = prompts(body, MAX_PROMPTS // opts.n or 1, len(service.engine.tokenizer))
            # echo returns and scores exactly what the client sent: no --prompt-template / --few-shot
            texts = [p if isinstance(p, list) or opts.sampling.echo else completion_prompt(p, config.prompt)
                     for p in found]
            ids = [tokenize(service, t, opts.max_tokens, True) for t in texts]
            echoes = [(service.engine.tokenizer.decode(t) if isinstance(t, list) else t) if opts.sampling.echo
                      else None for t in texts]
            items = _items(ids, opts)
            head = {"id": request.state.request_id, "object": "text_completion", "created": int(time.time()),
                    "model": name}
            if opts.stream:
                return _stream(service, name, items, head, _completion_chunk, opts, sum(map(len, ids)))
            results = await _run(service, name, items)
        except ApiError as err:
            return error_response(err)
        service.metrics.tokens.labels(adapter=service.label_of(name) or name).inc(
            sum(r.completion_tokens for r in results))
        return {**head, "usage": usage(sum(map(len, ids)), results),
                "choices": [_completion_choice(service, i, r, echoes[i // opts.n]) for i, r in enumerate(results)]}

    async def chat_completions(request: Request):
        try:
            body = await read_json(request, ChatBody)
            name = model_name(body, service)
            opts = options(body, "chat", config.max_new_tokens_limit, config.max_n)
            text, special = chat_prompt(body, service, name)
            ids = tokenize(service, text, opts.max_tokens, special)
            items = _items([ids], opts)
            head = {"id": request.state.request_id, "object": "chat.completion", "created": int(time.time()),
                    "model": name}
            if opts.stream:
                return _stream(service, name, items, {**head, "object": "chat.completion.chunk"}, _chat_chunks(),
                               opts, len(ids))
            results = await _run(service, name, items)
        except ApiError as err:
            return error_response(err)
        service.metrics.tokens.labels(adapter=service.label_of(name) or name).inc(
            sum(r.completion_tokens for r in results))
        return {**head, "usage": usage(len(ids), results),
                "choices": [_chat_choice(service, i, r) for i, r in enumerate(results)]}

    async def models():
        return _models(service)

    router.add_api_route(f"{PREFIX}/completions", completions, methods=["POST"])
    router.add_api_route(f"{PREFIX}/chat/completions", chat_completions, methods=["POST"])
    router.add_api_route(f"{PREFIX}/models", models, methods=["GET"])
    return router
