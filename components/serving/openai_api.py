"""OpenAI-compatible routes: /openai/v1/completions, /chat/completions and /models.

The ``model`` field picks what answers: the base model's served name or an adapter's.
Decoding is greedy (``temperature``/``top_p`` are accepted and ignored); ``n`` must be
1 and streaming is not offered. Every malformed request gets a 4xx with an
OpenAI-shaped error ({"error": {"message", "type", "param", "code"}}), never a 500.
"""

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from aicd.components.errors import ServingError
from aicd.components.serving.engine import GenItem
from aicd.components.serving.prompts import PromptError, completion_prompt
from aicd.components.serving.prompts import chat_prompt as render_chat
from aicd.components.serving.schemas import MAX_DEPTH, ChatBody, CompletionBody, SchemaError, json_depth, validated
from aicd.components.serving.service import Service

PREFIX = "/openai/v1"
_ROLES = {"system", "user", "assistant"}
_MAX_PROMPTS = 64


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


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


def _int(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"`{key}` must be an integer, got {json.dumps(value)}", key)
    if not low <= value <= high:
        raise ApiError(400, f"`{key}` must be between {low} and {high}, got {value}", key)
    return value


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "`stop` must be a non-empty string or a list of at most 4 of them", "stop")
    return tuple(stops)


def check_common(body: dict) -> None:
    if body.get("stream"):
        raise ApiError(400, "`stream` is not supported by this predictor; send stream=false", "stream")
    _int(body, "n", 1, 1, 1)
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)
                                    or not 0 <= temperature <= 2):
        raise ApiError(400, f"`temperature` must be a number between 0 and 2, got {json.dumps(temperature)}",
                       "temperature")
    if body.get("logprobs") not in (None, False, 0):
        raise ApiError(400, "`logprobs` is not supported by this predictor", "logprobs")


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


def _prompts(body: dict) -> list[str]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError(400, "`prompt` must be a string or a non-empty list of strings (token arrays are not "
                       "supported)", "prompt")
    if len(prompts) > _MAX_PROMPTS:
        raise ApiError(400, f"`prompt` lists {len(prompts)} prompts; send at most {_MAX_PROMPTS} per request",
                       "prompt")
    return prompts


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


def tokenize(service: Service, text: str, max_tokens: int, special: bool) -> list[int]:
    ids = service.engine.tokenizer(text, add_special_tokens=special)["input_ids"]
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
    except ServingError as err:  # the adapter was removed while the request waited
        raise ApiError(404, err.message + (f"; {err.hint}" if err.hint else ""), "model") from None


def _usage(items: list[GenItem], results) -> dict[str, int]:
    prompt = sum(len(i.prompt_ids) for i in items)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def build_router(service: Service) -> APIRouter:
    router = APIRouter()
    limit = service.config.max_new_tokens_limit

    async def completions(request: Request):
        try:
            body = await read_json(request, CompletionBody)
            name = model_name(body, service)
            check_common(body)
            max_tokens = _int(body, "max_tokens", min(16, limit), 1, limit)
            stops = _stops(body)
            items = [GenItem(tokenize(service, completion_prompt(p, service.config.prompt), max_tokens, True),
                             max_tokens, stops) for p in _prompts(body)]
            results = await _run(service, name, items)
        except ApiError as err:
            return error_response(err)
        service.metrics.tokens.labels(adapter=service.label_of(name) or name).inc(
            sum(r.completion_tokens for r in results))
        return {"id": request.state.request_id, "object": "text_completion", "created": int(time.time()),
                "model": name, "usage": _usage(items, results),
                "choices": [{"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
                            for i, r in enumerate(results)]}

    async def chat_completions(request: Request):
        try:
            body = await read_json(request, ChatBody)
            name = model_name(body, service)
            check_common(body)
            key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
            max_tokens = _int(body, key, min(128, limit), 1, limit)
            text, special = chat_prompt(body, service, name)
            item = GenItem(tokenize(service, text, max_tokens, special), max_tokens, _stops(body))
            (result,) = await _run(service, name, [item])
        except ApiError as err:
            return error_response(err)
        service.metrics.tokens.labels(adapter=service.label_of(name) or name).inc(result.completion_tokens)
        return {"id": request.state.request_id, "object": "chat.completion", "created": int(time.time()),
                "model": name, "usage": _usage([item], [result]),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "logprobs": None, "finish_reason": result.finish_reason}]}

    async def models():
        now = int(time.time())
        return {"object": "list", "data": [{"id": n, "object": "model", "created": now, "owned_by": "aicd"}
                                           for n in (service.served() if service.ready else [])]}

    router.add_api_route(f"{PREFIX}/completions", completions, methods=["POST"])
    router.add_api_route(f"{PREFIX}/chat/completions", chat_completions, methods=["POST"])
    router.add_api_route(f"{PREFIX}/models", models, methods=["GET"])
    return router
