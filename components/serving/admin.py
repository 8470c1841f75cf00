"""Run-time adapter management (bearer token) and the feedback endpoint.

- ``GET/POST /v1/admin/adapters``, ``DELETE /v1/admin/adapters/{name}``: need
  ``Authorization: Bearer <token>`` with the token of ``--admin-token-file``; no token
  answers 401, a wrong one 403; without ``--admin-token-file`` they answer 403.
- ``POST /v1/feedback`` ``{"id": "<request id>", "rating": "up"|"down", "correction": str|null}``:
  the request id is the ``id`` of an OpenAI response or the ``x-request-id`` header of
  any inference response, signed by the predictor (request_ids.py): a forged id gets 403,
  a second feedback on one id 409, a client over its rate 429, a missing or wrong bearer
  token (with ``--feedback-token-file``) 401/403. Written to the payload log for collect_feedback.

An added adapter's URI must lie inside one of ``--adapter-root`` (default /mnt/models) or be a
``pvc://`` URI: anything else (another local folder, ``..`` or a link out of a root, pkg://, a
remote URI) gets 403 naming the allowed roots.
"""

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from aicd.components.errors import AicdError, UriError
from aicd.components.serving.openai_api import ApiError, read_json
from aicd.components.serving.schemas import AdapterBody, FeedbackBody
from aicd.components.serving.service import Service
from aicd.components.uris import resolve_inside

MAX_CORRECTION = 20_000


def _error(err: ApiError) -> JSONResponse:
    headers = {"www-authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse({"error": err.message}, status_code=err.status, headers=headers)


def _authorize(service: Service, request: Request) -> None:
    if service.admin_token is None:
        raise ApiError(403, "admin endpoints are disabled: start the predictor with --admin-token-file")
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        raise ApiError(401, "missing bearer token: send `Authorization: Bearer <admin token>`")
    if not hmac.compare_digest(header[7:].strip().encode(), service.admin_token.encode()):
        raise ApiError(403, "the bearer token is not the admin token")


def _message(err: AicdError) -> str:
    return err.message + (f"; fix: {err.hint}" if err.hint else "")


def _allowed(service: Service, uri: str) -> None:
    """A request may name only adapters inside the predictor's ``--adapter-root`` folders or on a claim."""
    try:
        resolve_inside(uri, service.config.adapter_roots, "adapter URI")
    except UriError as err:
        status = 400 if "does not exist" in err.message else 403
        raise ApiError(status, _message(err)) from None


def _feedback_allowed(service: Service, request: Request) -> None:
    if service.feedback_token is not None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise ApiError(401, "missing bearer token: send `Authorization: Bearer <feedback token>`")
        if not hmac.compare_digest(header[7:].strip().encode(), service.feedback_token.encode()):
            raise ApiError(403, "the bearer token is not the feedback token")
    client = request.client.host if request.client else "unknown"
    if not service.feedback_limiter.allow(client):
        raise ApiError(429, f"too much feedback from {client}: at most {service.config.feedback_rate_per_minute} "
                       "per minute; retry later")


def feedback_handler(service: Service):
    """POST /v1/feedback: a rating (and correction) of one served response, once per signed id."""

    async def feedback(request: Request):
        try:
            _feedback_allowed(service, request)
            body = await read_json(request, FeedbackBody)
            rid, rating, correction = body["id"], body["rating"], body.get("correction")
            adapter, why = service.request_ids.verify(rid)
            if adapter is None:
                raise ApiError(403, f"`id` {rid[:80]!r} is refused: {why}")
            if not service.request_ids.claim(rid):
                raise ApiError(409, f"feedback on {rid!r} was already recorded; each response takes one")
        except ApiError as err:
            return _error(err)
        service.payloads.feedback(rid, rating, correction, adapter)
        service.metrics.feedback.labels(adapter=adapter, rating=rating).inc()
        return JSONResponse({"id": rid, "recorded": True}, status_code=202)

    return feedback


def build_router(service: Service) -> APIRouter:
    router = APIRouter()

    async def list_adapters(request: Request):
        try:
            _authorize(service, request)
        except ApiError as err:
            return _error(err)
        return {"ready": service.ready, "models": service.describe()}

    async def add_adapter(request: Request):
        try:
            _authorize(service, request)
            body = await read_json(request, AdapterBody)
            name, uri = body.get("name"), body.get("uri")
            if not isinstance(name, str) or not isinstance(uri, str) or not uri:
                raise ApiError(400, 'send {"name": "<adapter name>", "uri": "<adapter artifact URI>"}')
            if not service.ready:
                raise ApiError(503, "the predictor is still loading; retry when it is ready")
            if name in service.served():
                raise ApiError(409, f"model {name!r} is already served; remove it first or choose another name")
            _allowed(service, uri)
            result = await service.add_adapter(name, uri)
        except ApiError as err:
            return _error(err)
        except AicdError as err:
            return _error(ApiError(400, _message(err)))
        return JSONResponse(result, status_code=201)

    async def remove_adapter(name: str, request: Request):
        try:
            _authorize(service, request)
            if name not in service.engine.adapters:
                raise ApiError(404, f"adapter {name!r} is not served; served adapters: "
                               + (", ".join(sorted(service.engine.adapters)) or "none"))
            result = await service.remove_adapter(name)
        except ApiError as err:
            return _error(err)
        except AicdError as err:
            return _error(ApiError(404, _message(err)))
        return result

    router.add_api_route("/v1/admin/adapters", list_adapters, methods=["GET"])
    router.add_api_route("/v1/admin/adapters", add_adapter, methods=["POST"])
    router.add_api_route("/v1/admin/adapters/{name}", remove_adapter, methods=["DELETE"])
    router.add_api_route("/v1/feedback", feedback_handler(service), methods=["POST"])
    return router
