"""The answer task: parse the message, bind log context, hand the job to the runtime."""

from __future__ import annotations

import json
from typing import Any

import structlog
from celery import Task

from core.errors import InvalidJobError
from core.job import DeadReason, check_limits, parse_spec
from core.message import TASK_NAME
from workers.celeryapp import app
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
        job, dispatch = _parse(args, kwargs)
        spec = parse_spec(job)
        s = rt.settings
        check_limits(spec, s.max_question_chars, s.max_context_docs, s.max_context_chars)
    except InvalidJobError as exc:
        job_id = _job_id_of(kwargs)
        raw = json.dumps({"args": args, "kwargs": kwargs}, default=str)[:4000]
        payload = kwargs.get("job") if isinstance(kwargs.get("job"), dict) else None
        rt.dlq.kill(job_id, DeadReason.INVALID_PAYLOAD, str(exc), payload=payload, raw=raw)
        log.warning("message_dead_lettered", reason="invalid_payload", error=str(exc))
        return "invalid"
    structlog.contextvars.bind_contextvars(job_id=spec.id, attempt=dispatch)
    return rt.call(execute(rt, spec, dispatch, task_id))


def _parse(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, int]:
    if args:
        raise InvalidJobError(f"positional arguments are not accepted, got {len(args)}")
    extra = set(kwargs) - {"job", "dispatch"}
    if extra:
        raise InvalidJobError(f"unexpected message fields: {sorted(extra)}")
    if "job" not in kwargs:
        raise InvalidJobError("job: field required")
    dispatch = kwargs.get("dispatch", 1)
    if not isinstance(dispatch, int) or isinstance(dispatch, bool) or dispatch < 1:
        raise InvalidJobError(f"dispatch: must be a positive integer, got {dispatch!r}")
    return kwargs["job"], dispatch


def _job_id_of(kwargs: dict[str, Any]) -> str | None:
    job = kwargs.get("job")
    job_id = job.get("id") if isinstance(job, dict) else None
    return job_id if isinstance(job_id, str) and job_id.isalnum() and len(job_id) <= 64 else None
