"""The HTTP API other services use: submit jobs, read results, manage dead letters, watch health.

Built by `create_app(settings)` and served by uvicorn (`askq api`). Every route except
/healthz and /readyz needs a bearer token from `api.tokens`. Bad input gets a 422 whose
`detail` names each field and its problem, and nothing is enqueued; bodies over
`api.max_body_bytes` get a 413 before they are parsed.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from typing import Annotated, Any

import redis
import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from config.settings import Settings
from core.connection import connect
from core.deadletter import DeadLetter
from core.errors import ConfigError, InvalidJobError, JobNotFoundError
from core.health import Health, check_health
from core.job import DeadReason, JobSpec, JobView, check_limits
from core.liveness import list_workers
from core.metrics import registry_for
from producers.client import Client

log = structlog.get_logger("askq.api")


class JobIn(BaseModel):
    """One job as a caller submits it."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    context: list[str] = Field(default_factory=list)
    idempotency_key: str | None = Field(None, min_length=1, max_length=256)
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class BatchIn(BaseModel):
    """Several jobs in one request: all are checked before any is enqueued."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobIn] = Field(min_length=1)


class Submitted(BaseModel):
    """A job id; created is false when the idempotency key already named a job."""

    id: str
    created: bool


class BatchSubmitted(BaseModel):
    jobs: list[Submitted]


class Problem(BaseModel):
    field: str
    problem: str


class ValidationProblem(BaseModel):
    """The 422 body: what is wrong, field by field."""

    message: str
    detail: list[Problem]


class ReplayOutcome(BaseModel):
    id: str
    outcome: str  # ok, not_dead, changed, no_payload


class Purged(BaseModel):
    purged: int


class Readiness(BaseModel):
    ready: bool
    redis: bool
    workers_alive: int
    problems: list[str]


_SUBMIT_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"anyOf": [{"$ref": "#/components/schemas/JobIn"}, {"$ref": "#/components/schemas/BatchIn"}]}
            }
        },
    }
}
_422: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationProblem, "description": "bad input; nothing was enqueued"}
}
# Module level: route annotations are resolved against module globals.
_BEARER = HTTPBearer(auto_error=False)
_404: dict[int | str, dict[str, Any]] = {404: {"description": "no such job or dead letter"}}


def _problem(message: str, problems: list[Problem], status: int = 422) -> JSONResponse:
    body = ValidationProblem(message=message, detail=problems)
    return JSONResponse(status_code=status, content=body.model_dump())


def _problems(errors: list[Any], prefix: tuple[Any, ...] = ()) -> list[Problem]:
    found = []
    for err in errors:
        loc = [str(p) for p in (*prefix, *err.get("loc", ())) if p not in ("body", "query", "path")]
        found.append(Problem(field=".".join(loc) or "body", problem=str(err.get("msg", "invalid"))))
    return found


def _message(problems: list[Problem]) -> str:
    return "; ".join(f"{p.field}: {p.problem}" for p in problems)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes the limit (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body is {declared} bytes, limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body is over the limit of {limit} bytes")
    return bytes(body)


def _parse_submission(raw: bytes, settings: Settings) -> tuple[list[JobSpec], bool]:
    """Validate a single job or a batch into specs (and whether it was a batch); _Invalid names the field."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _Invalid([Problem(field="body", problem=f"not valid JSON ({exc})")]) from None
    try:
        batch = BatchIn.model_validate(data) if isinstance(data, dict) and "jobs" in data else None
        jobs = batch.jobs if batch else [JobIn.model_validate(data)]
    except ValidationError as exc:
        raise _Invalid(_problems(list(exc.errors()))) from None
    if len(jobs) > settings.api.max_batch:
        raise _Invalid([Problem(field="jobs", problem=f"{len(jobs)} jobs, limit is {settings.api.max_batch}")])
    specs = []
    for index, job in enumerate(jobs):
        where = f"jobs.{index}." if batch else ""
        try:
            spec = JobSpec.new(job.question, job.context, job.idempotency_key, job.metadata)
            check_limits(spec, settings.max_question_chars, settings.max_context_docs, settings.max_context_chars)
        except InvalidJobError as exc:
            field, _, problem = str(exc).partition(": ")
            raise _Invalid([Problem(field=where + field, problem=problem or str(exc))]) from None
        specs.append(spec)
    return specs, batch is not None


class _Invalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(_message(problems))
        self.problems = problems


def create_app(settings: Settings, redis_client: redis.Redis | None = None) -> FastAPI:
    """The API for these settings; one Redis client (thread-safe pool) serves every request."""
    client = Client(settings, redis_client or connect(settings))
    tokens = [t.get_secret_value().encode() for t in settings.api.tokens]
    app = FastAPI(
        title="askq",
        version="1",
        description="A resilient LLM job queue: submit questions, read answers, replay dead letters.",
    )
    app.state.client = client

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if not tokens:
            return  # only possible on a loopback address, see serve()
        given = credentials.credentials.encode() if credentials else b""
        # Compare against every token so the time taken does not tell which one nearly matched.
        if not any([hmac.compare_digest(given, t) for t in tokens]):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorize)]

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _problems(list(exc.errors()))
        return _problem(_message(problems), problems)

    @app.exception_handler(_Invalid)
    async def _invalid(request: Request, exc: _Invalid) -> JSONResponse:
        return _problem(str(exc), exc.problems)

    @app.exception_handler(JobNotFoundError)
    async def _not_found(request: Request, exc: JobNotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(redis.ConnectionError)
    async def _redis_down(request: Request, exc: redis.ConnectionError) -> JSONResponse:
        log.warning("redis_unavailable", error=str(exc))
        return JSONResponse(status_code=503, content={"detail": "the job store is unreachable; retry later"},
                            headers={"Retry-After": "5"})

    @app.post(
        "/v1/jobs",
        dependencies=auth,
        status_code=202,
        response_model=Submitted | BatchSubmitted,
        openapi_extra=_SUBMIT_SCHEMA,
        responses={**_422, 413: {"description": "request body too large"}},
        summary="Submit one job, or a batch as {\"jobs\": [...]}",
    )
    async def submit(request: Request) -> Any:
        raw = await _read_body(request, settings.api.max_body_bytes)
        specs, is_batch = _parse_submission(raw, settings)
        created = await run_in_threadpool(client.store.submit_many, specs)
        log.info("jobs_submitted", count=len(specs), created=sum(created))
        if not is_batch:
            one = Submitted(id=specs[0].id, created=created[0])
            return JSONResponse(status_code=202 if one.created else 200, content=one.model_dump())
        return BatchSubmitted(jobs=[Submitted(id=s.id, created=c) for s, c in zip(specs, created, strict=True)])

    @app.get("/v1/jobs/{job_id}", dependencies=auth, response_model=JobView, responses=_404)
    def get_job(job_id: str) -> JobView:
        return client.get(job_id)

    @app.get(
        "/v1/jobs/{job_id}/result",
        dependencies=auth,
        response_model=JobView,
        responses={**_404, 202: {"model": JobView, "description": "not finished within the wait"}},
        summary="The job once it succeeded or is dead, waiting up to `wait` seconds (long-poll)",
    )
    async def get_result(
        job_id: str, wait: float = Query(0.0, ge=0, le=settings.api.max_wait_s, description="seconds to wait")
    ) -> Any:
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            view = await run_in_threadpool(client.get, job_id)
            if view.state.terminal:
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return JSONResponse(status_code=202, content=view.model_dump(mode="json"))
            # Sleeping on the event loop, not a thread: thousands of waiters cost no threads.
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.5)

    @app.get("/v1/dead-letters", dependencies=auth, response_model=list[DeadLetter])
    def list_dead_letters(
        reason: DeadReason | None = None,
        since: Annotated[float | None, Query(ge=0, description="only records from the last SINCE seconds")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[DeadLetter]:
        cutoff = time.time() - since if since is not None else None
        return client.dead_letters(reason=reason, since=cutoff, limit=limit)

    @app.get("/v1/dead-letters/{record_id}", dependencies=auth, response_model=DeadLetter, responses=_404)
    def show_dead_letter(record_id: str) -> DeadLetter:
        return client.dead_letter(record_id)

    @app.post("/v1/dead-letters/{record_id}/replay", dependencies=auth, response_model=ReplayOutcome,
              responses=_404)
    def replay_dead_letter(record_id: str) -> ReplayOutcome:
        outcome = client.replay(record_id)
        log.info("dead_letter_replayed", record_id=record_id, outcome=outcome)
        return ReplayOutcome(id=record_id, outcome=outcome)

    @app.post("/v1/dead-letters/replay", dependencies=auth, response_model=list[ReplayOutcome])
    def replay_dead_letters(reason: DeadReason | None = None) -> list[ReplayOutcome]:
        outcomes = client.replay_all(reason)
        log.info("dead_letters_replayed", reason=reason, count=len(outcomes))
        return [ReplayOutcome(id=i, outcome=o) for i, o in outcomes.items()]

    @app.delete("/v1/dead-letters", dependencies=auth, response_model=Purged)
    def purge_dead_letters(reason: DeadReason | None = None) -> Purged:
        purged = client.purge_dead_letters(reason)
        log.warning("dead_letters_purged", reason=reason, count=purged)
        return Purged(purged=purged)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz() -> Any:
        """The health verdict over the sliding window; 503 only when critical."""
        health = check_health(client.redis, settings.health.window_s)
        return JSONResponse(status_code=503 if health.status == "critical" else 200, content=health.model_dump())

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    def readyz() -> Any:
        """Ready when Redis answers and at least one worker is alive."""
        problems = []
        alive = 0
        try:
            client.redis.ping()
            alive = sum(1 for w in list_workers(client.redis, settings) if w.state == "alive")
            up = True
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            up = False
            problems.append(f"redis unreachable: {type(exc).__name__}")
        if up and alive == 0:
            problems.append("no worker alive")
        body = Readiness(ready=not problems, redis=up, workers_alive=alive, problems=problems)
        return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump())

    registry = registry_for(client.redis, settings)

    def openapi() -> dict[str, Any]:
        """The generated schema plus the submit body's models, which the route reads by hand."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (JobIn, BatchIn):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/metrics", dependencies=auth, response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics() -> Response:
        """Prometheus exposition, computed from Redis: the cluster's totals, whichever process serves it."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

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
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level, access_log=False,
                limit_concurrency=2048, timeout_keep_alive=30)
