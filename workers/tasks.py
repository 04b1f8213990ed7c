"""The answer task: parse the message, bind log context, hand the job to the runtime."""

from __future__ import annotations

import json
from typing import Any

import structlog
from celery import Task

from core.deadletter import MAX_RAW_CHARS
from core.errors import InvalidJobError
from core.job import check_limits
from core.message import TASK_NAME, parse_arguments, parse_job
from workers.celeryapp import app
from workers.consumer import record_invalid
from workers.execution import execute
from workers.runtime import get_runtime

log = structlog.get_logger("askq.task")


@app.task(  # type: ignore[untyped-decorator]
    name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def answer(self: Task, *args: Any, **kwargs: Any) -> str:
    """Answer one job; an invalid message is dead-lettered, never executed."""
    rt = get_runtime()
    task_id = str(self.request.id)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id)
    try:
        job, dispatch = parse_arguments(args, kwargs)
        spec = parse_job(job)
        s = rt.settings
        check_limits(spec, s.max_question_chars, s.max_context_docs, s.max_context_chars)
    except InvalidJobError as exc:
        _dead_letter(task_id, args, kwargs, str(exc))
        return "invalid"
    structlog.contextvars.bind_contextvars(job_id=spec.id, attempt=dispatch)
    outcome = str(rt.call(execute(rt, spec, dispatch, task_id)))
    if outcome == "missing":
        # Well formed, but no such job: recorded rather than dropped, so no entry vanishes.
        _dead_letter(task_id, args, kwargs, f"message names job {spec.id!r}, which askq has no record of "
                     "(never submitted, or expired after result_ttl_s)")
    return outcome


def _dead_letter(task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], error: str) -> None:
    # The record keeps the task id (the message's identity in logs and Flower) with its arguments.
    raw = json.dumps({"id": task_id, "args": args, "kwargs": kwargs}, default=repr)[:MAX_RAW_CHARS]
    payload = kwargs.get("job") if isinstance(kwargs.get("job"), dict) else None
    record_invalid(_job_id_of(kwargs), raw, error, payload)


def _job_id_of(kwargs: dict[str, Any]) -> str | None:
    job = kwargs.get("job")
    job_id = job.get("id") if isinstance(job, dict) else None
    return job_id if isinstance(job_id, str) and job_id.isalnum() and len(job_id) <= 64 else None
