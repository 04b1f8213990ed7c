"""The HTTP API other services use: submit jobs, read results, manage dead letters, watch health.

Built by `create_app(settings)` and served by uvicorn (`askq api`); the routes live in
producers/routes/, one router per area. Every route except /healthz and /readyz needs a bearer
token from `api.tokens`. Bad input gets a 422 whose `detail` names each field and its problem,
and nothing is enqueued; bodies over `api.max_body_bytes` get a 413 before they are parsed.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import redis
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from config.settings import Settings
from core.connection import connect
from core.errors import ConfigError, JobNotFoundError
from core.metrics import registry_for
from producers.client import Client
from producers.routes import deadletters, jobs, probes
from producers.routes.common import problem_response, problems_of
from producers.server import uvicorn_options
from producers.waiter import ResultWaiter

log = structlog.get_logger("askq.api")


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """Every 422, FastAPI's own and the submit route's: field by field (see routes.jobs.parse_submission)."""
    assert isinstance(exc, RequestValidationError)
    return problem_response(problems_of(list(exc.errors())))


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis_unavailable", error=str(exc))
    return JSONResponse(status_code=503, content={"detail": "the job store is unreachable; retry later"},
                        headers={"Retry-After": "5"})


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus the submit body's models, which the route reads by hand."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (jobs.JobIn, jobs.BatchIn):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings, redis_client: redis.Redis | None = None) -> FastAPI:
    """The API for these settings; one Redis client (thread-safe pool) serves every request."""
    app = FastAPI(
        title="askq",
        version="1",
        description="A resilient LLM job queue: submit questions, read answers, replay dead letters.",
    )
    app.state.client = Client(settings, redis_client or connect(settings))
    app.state.tokens = [t.get_secret_value().encode() for t in settings.api.tokens]
    app.state.waiter = ResultWaiter(app.state.client.store)
    app.state.registry = registry_for(app.state.client.redis, settings)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(JobNotFoundError, _not_found)
    app.add_exception_handler(redis.ConnectionError, _redis_down)
    app.include_router(jobs.router(settings.api.max_wait_s))
    app.include_router(deadletters.router)
    app.include_router(probes.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve without tokens anywhere but loopback."""
    if not settings.api.tokens and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the API on {host} without tokens: set ASKQ_API__TOKENS='[\"...\"]' "
            "or listen on 127.0.0.1"
        )


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    host = host or settings.api.host
    port = port or settings.api.port
    check_exposure(settings, host)
    app = create_app(settings)
    log.info("api_starting", host=host, port=port, auth=bool(settings.api.tokens))
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level, **uvicorn_options(settings.api))
