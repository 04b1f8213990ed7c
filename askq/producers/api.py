"""The HTTP API other services use: submit jobs, read results, manage dead letters, watch health.

Built by `create_app(settings)` and served by uvicorn (`askq api`); the routes live in
askq/producers/routes/, one router per area. Every route except /healthz and /readyz needs a bearer
token from `api.tokens`. Bad input gets a 422 whose `detail` names each field and its problem,
and nothing is enqueued; bodies over `api.max_body_bytes` get a 413 before they are parsed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from askq.config.logging import configure_logging
from askq.config.settings import Settings
from askq.core.connection import connect
from askq.core.metrics import registry_for
from askq.core.webhook import callback_url_schema
from askq.errors import ConfigError, DurabilityError, JobNotFoundError
from askq.producers import console
from askq.producers.client import Client
from askq.producers.routes import deadletters, jobs, probes
from askq.producers.routes.common import (
    Problem,
    ValidationProblem,
    is_loopback,
    known_query,
    problem_response,
    problems_of,
)
from askq.producers.server import uvicorn_options
from askq.producers.waiter import ResultWaiter

log = structlog.get_logger("askq.api")

DOCS_ASSETS = "/docs-assets"


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


async def _not_durable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("submit_not_durable", error=str(exc))
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "1"})


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The generated schema, made to say what the routes really answer.

    Adds the submit body's models (the route reads its body by hand), the configured limits the
    models cannot know (documents per job, characters, jobs per batch), and askq's own 422 body
    (FastAPI would declare its HTTPValidationError, which the API never sends).
    """
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (jobs.JobIn, jobs.BatchIn, jobs.CancelWhereIn):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        job = components["JobIn"]["properties"]
        job["question"]["maxLength"] = settings.max_question_chars
        job["context"]["maxItems"] = settings.max_context_docs
        job["context"]["items"]["maxLength"] = settings.max_context_chars
        job["context"]["description"] = (f"up to {settings.max_context_docs} documents of "
                                         f"{settings.max_context_chars} characters in all")
        job["callback_url"] = callback_url_schema(settings.callbacks.allowed_hosts)
        components["BatchIn"]["properties"]["jobs"]["maxItems"] = settings.api.max_batch
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            if "422" in operation.get("responses", {}):
                operation["responses"]["422"] = {
                    "description": "bad input, field by field; nothing was enqueued",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}},
                }
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        for body in (ValidationProblem, Problem):
            components.setdefault(body.__name__, body.model_json_schema(ref_template="#/components/schemas/{model}"))
        app.openapi_schema = schema
    return app.openapi_schema


def _add_docs(app: FastAPI) -> None:
    """/openapi.json, /docs and /redoc behind the same token rule as the API, or a console sign-in (README)."""

    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    # Every asset from this server (askq/producers/apidocs/): the pages work without internet.
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/swagger-ui/favicon-32x32.png",
            # No validator badge: Swagger UI would fetch it from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None})

    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/swagger-ui/favicon-32x32.png",
                              with_google_fonts=False)

    for path, endpoint in (("/openapi.json", openapi_json), ("/docs", swagger), ("/redoc", redoc)):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False,
                          dependencies=[Depends(console.docs_access)])
    # Public like any library's script: they hold nothing about this deployment.
    app.mount(DOCS_ASSETS, StaticFiles(directory=Path(__file__).parent / "apidocs"), name="docs-assets")


def create_app(settings: Settings, redis_client: redis.Redis | None = None) -> FastAPI:
    """The API for these settings; one Redis client (thread-safe pool) serves every request."""
    app = FastAPI(
        title="askq",
        version="1",
        description="A resilient LLM job queue: submit questions, read answers, replay dead letters.",
        # Served by _add_docs instead, behind the token: FastAPI's own would be open to anyone.
        openapi_url=None, docs_url=None, redoc_url=None,
        dependencies=[Depends(known_query)],
    )
    app.state.client = Client(settings, redis_client or connect(settings))
    app.state.tokens = [t.get_secret_value().encode() for t in settings.api.tokens]
    app.state.waiter = ResultWaiter(app.state.client.store)
    app.state.registry = registry_for(app.state.client.redis, settings)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(JobNotFoundError, _not_found)
    app.add_exception_handler(DurabilityError, _not_durable)
    app.add_exception_handler(redis.ConnectionError, _redis_down)
    app.add_exception_handler(redis.TimeoutError, _redis_down)
    app.include_router(jobs.router(settings.api.max_wait_s))
    app.include_router(deadletters.router)
    app.include_router(probes.router)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    _add_docs(app)
    console.install(app)
    return app


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
    configure_logging(settings.log_level, settings.log_json)
    check_exposure(settings, host)
    app = create_app(settings)
    log.info("api_starting", host=host, port=port, auth=bool(settings.api.tokens),
             console=f"http://{host}:{port}/console", docs=f"http://{host}:{port}/docs")
    # log_config=None: uvicorn's access and error logs go through askq's logging (JSON with log_json).
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level, log_config=None,
                **uvicorn_options(settings.api))
