"""Job routes: submit one job or a batch, read a job, long-poll for its result, cancel jobs."""

from __future__ import annotations

import asyncio
import json
import re
from itertools import accumulate
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from askq.config.settings import Settings
from askq.core.job import (
    METADATA_SCHEMA,
    CancelOutcome,
    JobRequest,
    JobSpec,
    JobView,
    Metadata,
    check_limits,
    key_conflicts,
    parse_where,
)
from askq.core.webhook import check_callback
from askq.errors import InvalidJobError
from askq.producers.client import Client
from askq.producers.routes.common import AUTH, BAD_INPUT, GUARDED, NOT_FOUND, ClientDep, Message
from askq.producers.waiter import ResultWaiter

log = structlog.get_logger("askq.api")


class JobIn(JobRequest):
    """One job as a caller submits it."""


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


class Cancelled(BaseModel):
    """What a cancel did: cancelled, or already_<state> for a job that had ended (it is unchanged)."""

    id: str
    outcome: CancelOutcome


class CancelWhereIn(BaseModel):
    """A bulk cancel: every job not yet ended whose metadata holds all of these keys and values."""

    model_config = ConfigDict(extra="forbid")

    where: Metadata = Field(min_length=1, examples=[{"team": "billing"}], json_schema_extra=METADATA_SCHEMA)


class CancelledWhere(BaseModel):
    """Each job that matched, with what its cancel did."""

    outcomes: dict[str, CancelOutcome]
    cancelled: int


# The route reads its body by hand (to enforce the size limit first), so the schema is declared here.
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


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 once it passes the limit (declared or streamed), 408 if slow."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body is {declared} bytes, limit is {limit}")
    body = bytearray()
    try:
        # A total deadline, not per chunk: a body trickled a byte at a time must not hold the request.
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise HTTPException(413, f"request body is over the limit of {limit} bytes")
    except TimeoutError:
        raise HTTPException(408, f"request body not received within {timeout_s:g} s",
                            headers={"Connection": "close"}) from None
    return bytes(body)


# A JSON string literal (escapes included), so brackets inside strings are not counted as nesting.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(raw: bytes) -> int:
    """How deep the arrays and objects in a JSON text nest, found without parsing it.

    json.loads recurses once per level and fails with RecursionError (a 500) near 1,000; this
    is a regex and a translate (C speed) plus one pass over the brackets alone.
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _refuse(field: tuple[str | int, ...], problem: str) -> RequestValidationError:
    """A 422 naming one field, in the shape FastAPI's own validation errors take."""
    return RequestValidationError([{"loc": field, "msg": problem}])


def parse_submission(raw: bytes, settings: Settings) -> tuple[list[JobSpec], bool]:
    """Validate a single job or a batch into specs (and whether it was a batch); a 422 names the field."""
    limit = settings.api.max_json_depth
    # Fewer opening brackets than the limit cannot nest deeper than it: most bodies skip the scan.
    if raw.count(b"[") + raw.count(b"{") > limit and nesting_depth(raw) > limit:
        raise _refuse(("body",), f"JSON nested deeper than {limit} levels")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _refuse(("body",), f"not valid JSON ({exc})") from None
    try:
        batch = BatchIn.model_validate(data) if isinstance(data, dict) and "jobs" in data else None
        jobs = batch.jobs if batch else [JobIn.model_validate(data)]
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    if len(jobs) > settings.api.max_batch:
        raise _refuse(("jobs",), f"{len(jobs)} jobs, limit is {settings.api.max_batch}")
    specs = []
    for index, job in enumerate(jobs):
        where: tuple[str | int, ...] = ("jobs", index) if batch else ()
        try:
            spec = JobSpec.of(job)
            check_limits(spec, settings.max_question_chars, settings.max_context_docs, settings.max_context_chars)
            check_callback(spec, settings.callbacks.allowed_hosts)
        except InvalidJobError as exc:
            field, _, problem = str(exc).partition(": ")
            raise _refuse((*where, field), problem or str(exc)) from None
        specs.append(spec)
    conflicts = key_conflicts(specs)
    if conflicts:
        raise RequestValidationError([
            {"loc": ("jobs", other, "idempotency_key"), "msg": f"also given to jobs.{first} with a different "
             "question or context"} for first, other in conflicts])
    return specs, batch is not None


async def submit(request: Request, client: ClientDep) -> Any:
    raw = await read_body(request, client.settings.api.max_body_bytes, client.settings.api.body_timeout_s)
    specs, is_batch = parse_submission(raw, client.settings)
    created = await run_in_threadpool(client.store.submit_many, specs)
    log.info("jobs_submitted", count=len(specs), created=sum(created))
    if not is_batch:
        one = Submitted(id=specs[0].id, created=created[0])
        return JSONResponse(status_code=202 if one.created else 200, content=one.model_dump())
    return BatchSubmitted(jobs=[Submitted(id=s.id, created=c) for s, c in zip(specs, created, strict=True)])


def get_job(job_id: str, client: ClientDep) -> JobView:
    return client.get(job_id)


def cancel_job(job_id: str, client: ClientDep) -> Cancelled:
    outcome = client.cancel(job_id)
    log.info("job_cancel", job_id=job_id, outcome=outcome.value)
    return Cancelled(id=job_id, outcome=outcome)


async def cancel_where(request: Request, client: ClientDep) -> CancelledWhere:
    raw = await read_body(request, client.settings.api.max_body_bytes, client.settings.api.body_timeout_s)
    try:
        body = CancelWhereIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    try:
        where = parse_where(body.where)
    except InvalidJobError as exc:
        field, _, problem = str(exc).partition(": ")
        raise _refuse(("body", field), problem or str(exc)) from None
    outcomes = await run_in_threadpool(client.cancel_where, where)
    done = sum(1 for o in outcomes.values() if o == CancelOutcome.CANCELLED)
    log.info("jobs_cancel_where", matched=len(outcomes), cancelled=done)
    return CancelledWhere(outcomes={k: CancelOutcome(v) for k, v in outcomes.items()}, cancelled=done)


async def long_poll(request: Request, client: Client, job_id: str, wait: float) -> Any:
    """The job once terminal, or a 202 with its current state when `wait` seconds pass first."""
    if wait > 0:
        # One shared poller for all waiting callers (producers.waiter): no thread or Redis call each.
        waiter: ResultWaiter = request.app.state.waiter
        view = await waiter.wait(job_id, wait)
    else:
        view = await run_in_threadpool(client.get, job_id)
    # Serialized by pydantic-core in one step: 2,000 callers whose wait ends together are answered
    # in one burst, and FastAPI's response_model path would validate each view again first.
    return Response(view.model_dump_json(), status_code=200 if view.state.terminal else 202,
                    media_type="application/json")


def router(max_wait_s: float) -> APIRouter:
    """The job routes; `max_wait_s` bounds the long-poll wait (in validation and in the schema)."""
    jobs = APIRouter(dependencies=AUTH, responses=GUARDED)
    jobs.add_api_route(
        "/v1/jobs", submit, methods=["POST"], status_code=202, response_model=Submitted | BatchSubmitted,
        openapi_extra=_SUBMIT_SCHEMA,
        responses={
            200: {"model": Submitted, "description": "one job whose idempotency key already named a job (created "
                  "false, its id); a batch always answers 202, with created per job"},
            202: {"description": "enqueued"},
            **BAD_INPUT,
            408: {"model": Message, "description": "the body did not arrive within api.body_timeout_s"},
            413: {"model": Message, "description": "request body over api.max_body_bytes"},
        },
        summary="Submit one job, or a batch as {\"jobs\": [...]}",
    )
    jobs.add_api_route("/v1/jobs/{job_id}", get_job, methods=["GET"], response_model=JobView, responses=NOT_FOUND)
    jobs.add_api_route(
        "/v1/jobs/{job_id}", cancel_job, methods=["DELETE"], response_model=Cancelled, responses=NOT_FOUND,
        summary="Cancel a job: never started, or its provider call stopped; no result stored. Idempotent "
                "(already_cancelled); a job that ended first is left as it is (already_succeeded, ...)",
    )
    jobs.add_api_route(
        "/v1/jobs/cancel", cancel_where, methods=["POST"], response_model=CancelledWhere, responses=BAD_INPUT,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/CancelWhereIn"}}}}},
        summary="Cancel every job not yet ended whose metadata holds all the given keys and values",
    )

    async def get_result(
        request: Request, job_id: str, client: ClientDep,
        wait: float = Query(0.0, ge=0, le=max_wait_s, description="seconds to wait"),
    ) -> Any:
        return await long_poll(request, client, job_id, wait)

    jobs.add_api_route(
        "/v1/jobs/{job_id}/result", get_result, methods=["GET"], response_model=JobView,
        responses={**NOT_FOUND, 202: {"model": JobView, "description": "not finished within the wait"}},
        summary="The job once it succeeded or is dead, waiting up to `wait` seconds (long-poll)",
    )
    return jobs
