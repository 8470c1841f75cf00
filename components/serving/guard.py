"""The ASGI middleware in front of every route: size limit, fault drills, metrics, payload log.

- A JSON body nested deeper than ``schemas.MAX_DEPTH`` gets 400 before any parser sees it.
- A body larger than ``max_body_bytes`` gets 413 before it is read whole: a too-large
  Content-Length is refused at once, and a chunked body is counted as it streams in
  and refused as soon as it passes the limit (never buffered beyond it).
- On inference routes it names the adapter (from the URL for KServe v1/v2, from the
  JSON ``model`` field for OpenAI routes), answers ``fault_rate`` of them 503 (canary
  drills), counts ``aicd_requests_total{adapter,code}``, times
  ``aicd_request_duration_seconds{adapter}`` and logs successful payloads.
"""

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aicd.components.serving.schemas import MAX_DEPTH, SchemaError, V2Body, json_depth, validated
from aicd.components.serving.telemetry import Metrics, PayloadLog

log = logging.getLogger(__name__)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_KSERVE = re.compile(r"^/v1/models/(?P<v1>[^/:]+):predict$|^/v2/models/(?P<v2>[^/]+)(/versions/[^/]+)?/infer$")
_OPENAI = {"/openai/v1/completions", "/openai/v1/chat/completions"}
_LOG_CAP = 1 << 20  # responses larger than this are logged as a note, not in full
UNKNOWN = "unknown"


async def send_json(send: Send, status: int, payload: dict[str, Any], headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def inference_endpoint(path: str) -> tuple[str, str | None] | None:
    """(endpoint, model name from the URL or None) for inference routes; None for the rest."""
    if path in _OPENAI:
        return path, None
    m = _KSERVE.match(path)
    if m:
        return path, m.group("v1") or m.group("v2")
    return None


class GuardMiddleware:
    def __init__(self, app, max_body_bytes: int, metrics: Metrics, payloads: PayloadLog,
                 label_of: Callable[[str], str | None], fault_rate: float = 0.0, seed: int | None = None,
                 issue: Callable[[str], str] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.payloads = payloads
        self.label_of = label_of  # served name -> metric label ("base" or the adapter), None if unknown
        self.issue = issue  # label -> signed request id (request_ids.RequestIds.issue)
        self.fault_rate = fault_rate
        self.random = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        endpoint = inference_endpoint(scope["path"]) if scope["method"] == "POST" else None
        body, refused = await self._read_body(scope, receive, send)
        if body is not None and json_depth(body) > MAX_DEPTH:  # before anything parses it
            await send_json(send, 400, {"error": f"request body nests JSON more than {MAX_DEPTH} levels deep; "
                                                 "send a flatter body"})
            body, refused = None, 400
        if body is None:  # refused with 413/400 already, or the client left
            if endpoint is not None and refused:
                name = endpoint[1]
                self.metrics.observe((self.label_of(name) if name else None) or UNKNOWN, refused,
                                     time.perf_counter() - started)
            return
        replay = self._replay(body, receive)
        if endpoint is None:
            await self.app(scope, replay, send)
            return
        await self._inference(scope, replay, send, body, endpoint, started)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> tuple[bytes | None, int]:
        """(body, 0), or (None, status sent) when refused, or (None, 0) when the client left."""
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json(send, 400, {"error": f"invalid Content-Length header {declared!r}"})
                return None, 400
            if int(declared) > self.max_body_bytes:
                await self._too_large(send, int(declared))
                return None, 413
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, 0
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send, None)
                return None, 413
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), 0

    async def _too_large(self, send: Send, declared: int | None) -> None:
        what = f"{declared} bytes" if declared is not None else "more than that"
        await send_json(send, 413, {"error": f"request body is too large: the limit is {self.max_body_bytes} "
                                             f"bytes, got {what}; send a smaller request (fewer or shorter "
                                             "inputs) or raise --max-body-bytes"},
                        headers=[(b"connection", b"close")])

    @staticmethod
    def _replay(body: bytes, receive: Receive) -> Receive:
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        return replay

    def _adapter_label(self, body: bytes, url_name: str | None) -> tuple[str, Any]:
        parsed: Any = None
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            parsed = None
        name = url_name
        if name is None and isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
            name = parsed["model"]
        label = self.label_of(name) if name else None
        return label or UNKNOWN, parsed

    async def _inference(self, scope: Scope, receive: Receive, send: Send, body: bytes,
                         endpoint: tuple[str, str | None], started: float) -> None:
        path, url_name = endpoint
        label, parsed = self._adapter_label(body, url_name)
        problem = _v2_problem(path, body, parsed)
        if problem is not None:  # kserve's own parsing answers some malformed v2 bodies with 500
            await send_json(send, 400, {"error": problem})
            self.metrics.observe(label, 400, time.perf_counter() - started)
            return
        # The id is always the predictor's own, signed: feedback names it (a client's x-request-id is ignored).
        request_id = self.issue(label) if self.issue is not None and label != UNKNOWN else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        scope["state"]["adapter_label"] = label
        rid_header = (b"x-request-id", request_id.encode())
        if self.fault_rate and self.random.random() < self.fault_rate:
            await send_json(send, 503, {"error": "fault injected by --fault-rate (canary drill)"}, [rid_header])
            self.metrics.observe(label, 503, time.perf_counter() - started)
            return
        status, out = 500, []

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), rid_header]}
            elif message["type"] == "http.response.body" and sum(map(len, out)) < _LOG_CAP:
                out.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(label, status, elapsed)
        if 200 <= status < 300 and label != UNKNOWN:
            self.payloads.request(request_id, label, path, parsed, _decoded(b"".join(out)), elapsed * 1000)


def _v2_problem(path: str, body: bytes, parsed: Any) -> str | None:
    """Why a v2 infer body breaks the schema (None when it is fine, or is not JSON: kserve answers that)."""
    if not path.startswith("/v2/") or (parsed is None and body.strip() not in (b"null",)):
        return None
    if not isinstance(parsed, dict):
        return f"request body must be a JSON object, got {type(parsed).__name__}"
    try:
        validated(V2Body, parsed)
    except SchemaError as err:
        return err.message
    return None


def _decoded(raw: bytes) -> Any:
    if len(raw) >= _LOG_CAP:
        return {"note": f"response of {len(raw)}+ bytes not logged"}
    try:
        return _assembled(raw) if raw.startswith(b"data: ") else json.loads(raw)
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        return {"note": "non-JSON response"}


def _assembled(raw: bytes) -> dict[str, Any]:
    """A streamed OpenAI answer (server-sent events) as the one response it adds up to, for the payload log."""
    chunks = [json.loads(line[6:]) for line in raw.decode("utf-8").split("\n\n")
              if line.startswith("data: {")]
    head, choices, usage = dict(chunks[0]), {}, None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for c in chunk.get("choices", []):
            text = c["delta"].get("content") or "" if "delta" in c else c.get("text") or ""
            got = choices.setdefault(c["index"], {"index": c["index"], "text": "", "finish_reason": None})
            got["text"] += text
            got["finish_reason"] = c.get("finish_reason") or got["finish_reason"]
    chat = head.get("object") == "chat.completion.chunk"
    head.update(object="chat.completion" if chat else "text_completion", usage=usage, streamed=True, choices=[
        {"index": c["index"], "message": {"role": "assistant", "content": c["text"]},
         "finish_reason": c["finish_reason"]} if chat else c for _, c in sorted(choices.items())])
    return head
