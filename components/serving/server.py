"""Assemble and run the predictor: kserve's v1/v2 data plane plus the aicd routes.

The HTTP server listens at once (liveness answers while models load); readiness
(``/v2/health/ready``, ``/v1/models/NAME``) turns 200 only after the base and every
adapter are loaded and verified. A load failure stops the process with the message.
kserve's ``ModelServer.start`` binds 0.0.0.0 and parses ``sys.argv``; this builds the
same pieces (``DataPlane``, ``ModelRepository``, v1/v2 routers, exception handlers)
around a uvicorn server on ``--host``.
"""

import asyncio
import contextlib
import logging
import sys
from typing import Any

from aicd.components.errors import AicdError
from aicd.components.serving.config import ServeConfig, parse_config
from aicd.components.serving.service import Service

log = logging.getLogger(__name__)


def _import_kserve():
    """Import kserve without letting its module-level argparse read our command line."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve  # noqa: F401
        from kserve import model_server  # noqa: F401
    finally:
        sys.argv = saved


async def _internal_error(request, exc: Exception):
    """A bug is logged with its traceback; the client gets a 500 without the exception's text."""
    from fastapi.responses import JSONResponse

    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error in the predictor; its log has the details"}, status_code=500)


def _kserve_routes(app, service: Service) -> Any:
    _import_kserve()
    from kserve import ModelRepository
    from kserve.errors import (
        InferenceError,
        InvalidInput,
        ModelNotFound,
        ModelNotReady,
        ServerNotLive,
        ServerNotReady,
        inference_error_handler,
        invalid_input_handler,
        model_not_found_handler,
        model_not_ready_handler,
        server_not_live_handler,
        server_not_ready_handler,
    )
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    from aicd.components.serving.kserve_models import ServedModel

    class ReadyDataPlane(DataPlane):
        async def ready(self) -> bool:
            return service.ready

    repository = ModelRepository()
    dataplane = ReadyDataPlane(model_registry=repository)
    extension = ModelRepositoryExtension(model_registry=repository)
    register_v1_endpoints(app, dataplane, extension)
    register_v2_endpoints(app, dataplane, extension)
    for exc, handler in ((InvalidInput, invalid_input_handler), (InferenceError, inference_error_handler),
                         (ModelNotFound, model_not_found_handler), (ModelNotReady, model_not_ready_handler),
                         (ServerNotLive, server_not_live_handler), (ServerNotReady, server_not_ready_handler),
                         (Exception, _internal_error)):
        app.add_exception_handler(exc, handler)

    def on_change(name: str, added: bool) -> None:
        if added:
            model = ServedModel(name, service)
            model.load()
            repository.update(model, name)
        elif repository.get_model(name) is not None:
            repository.unload(name)

    service.on_change.append(on_change)
    for name in service.served() if service.ready else []:  # already loaded (tests, embedding)
        on_change(name, True)
    return repository


def build_app(service: Service, load: bool = True, on_fatal=None):
    """The ASGI application. With ``load`` the models load in the background at startup;
    ``on_fatal()`` is called when loading fails (``run`` stops the server with it)."""
    from fastapi import FastAPI, Response
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    from aicd.components.serving import admin, openai_api
    from aicd.components.serving.guard import GuardMiddleware

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(_load_or_exit(service, on_fatal)) if load else None
        yield
        if task is not None:
            task.cancel()
        await service.close()

    app = FastAPI(title="aicd predictor", lifespan=lifespan, docs_url=None, redoc_url=None)
    _kserve_routes(app, service)
    app.include_router(openai_api.build_router(service))
    app.include_router(admin.build_router(service))

    async def live():
        return {"status": "alive", "ready": service.ready}

    async def metrics():
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/", live, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    app.add_middleware(GuardMiddleware, max_body_bytes=service.config.max_body_bytes, metrics=service.metrics,
                       payloads=service.payloads, label_of=service.label_of, issue=service.request_ids.issue,
                       fault_rate=service.config.fault_rate,
                       seed=service.config.seed)
    return app


async def _load_or_exit(service: Service, on_fatal) -> None:
    try:
        await service.load_async()
    except Exception as err:  # noqa: BLE001 - a predictor that cannot serve what it was given must stop
        if not isinstance(err, AicdError):
            log.exception("loading failed")
            service.load_error = f"loading failed: {err}"
        if on_fatal is not None:
            on_fatal()


def run(config: ServeConfig) -> int:
    import uvicorn

    service = Service(config)
    server: uvicorn.Server | None = None

    def stop() -> None:
        server.should_exit = True

    app = build_app(service, on_fatal=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_config=None,
                                           access_log=False, timeout_graceful_shutdown=10))
    log.info("aicd predictor on http://%s:%d (loading %s with %d adapter(s))", config.host, config.port,
             config.base, len(config.adapters))
    server.run()
    if service.load_error:
        sys.stderr.write(f"aicd serve: error: {service.load_error}\n")
        return 2
    return 0


def serve(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m aicd.components.serving`` and ``aicd serve``; returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv[:1] == ["--"]:  # `aicd serve -- --base ...`
        argv = argv[1:]
    try:
        config = parse_config(argv)
    except AicdError as err:  # the options themselves are wrong: a usage error
        sys.stderr.write(f"aicd serve: error: {err}\n")
        return 2
    try:
        return run(config)
    except AicdError as err:
        sys.stderr.write(f"aicd serve: error: {err}\n")
        return err.exit_code


main = serve
