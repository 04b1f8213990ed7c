"""The answer task: parse the message, bind log context, hand the job to the runtime.

One task name, two forms of message (core.message.parse_arguments): askq's own, naming a stored
job and its dispatch, which is run; and another service's submission (a plain Celery
`send_task` carrying only a producer's fields), which becomes a job exactly as a submission
through the client does (askq/core/lua/submit.lua: the job record and its own first message in
one atomic step, nothing if the job exists) and is then run from that message.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import structlog
from celery import Task
from celery.exceptions import Reject

from askq.core import keys
from askq.core.deadletter import MAX_RAW_CHARS, DeadReason
from askq.core.job import JobRequest, check_limits
from askq.core.message import TASK_NAME, parse_arguments, parse_job, parse_submission, submitted_spec
from askq.core.store import JobStore
from askq.errors import InvalidJobError
from askq.workers.celeryapp import app
from askq.workers.consumer import record_invalid
from askq.workers.execution import execute, transient
from askq.workers.runtime import Runtime, get_runtime

log = structlog.get_logger("askq.task")

# Counted (askq stats, askq_events{name=...}) when a message names a job askq no longer has.
UNKNOWN_JOB_COUNTER = "unknown_job_messages"


@app.task(  # type: ignore[untyped-decorator]
    name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def answer(self: Task, *args: Any, **kwargs: Any) -> str:
    """Answer one job, or create one another service submitted; an invalid message is
    dead-lettered, never executed."""
    rt = get_runtime()
    task_id = str(self.request.id)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id)
    s = rt.settings
    try:
        job, dispatch = parse_arguments(args, kwargs)
        if dispatch is None:
            request = parse_submission(job, task_id)
            check_limits(request, s.max_question_chars, s.max_context_docs, s.max_context_chars)
        else:
            spec = parse_job(job)
            check_limits(spec, s.max_question_chars, s.max_context_docs, s.max_context_chars)
    except InvalidJobError as exc:
        _dead_letter(task_id, args, kwargs, str(exc))
        return "invalid"
    if dispatch is None:
        return _submit(rt, request, task_id)
    structlog.contextvars.bind_contextvars(job_id=spec.id, attempt=dispatch)
    outcome = str(rt.call(execute(rt, spec, dispatch, task_id)))
    if outcome == "missing":
        # Well formed, but its job is gone: it expired (result_ttl_s, or its dead letter's age)
        # while this message waited, e.g. a copy redelivered late. Nothing is left to answer;
        # counted and logged, so a stream of them is seen.
        _count_unknown(rt)
    return outcome


def _submit(rt: Runtime, request: JobRequest, task_id: str) -> str:
    """Create the job another service submitted, with its own first message, on this worker's
    queue (the one the message came from: an askq worker consumes only that one; the message's
    own routing key is the sender's word, not trusted). A redelivered or repeated message finds
    its job and creates nothing.

    The job record and its message are written in one script, before this message is acked:
    killed before it, the message comes back and tries again; killed after, the job is on its
    way and the redelivered message finds it. The job never exists without a message.
    """
    spec = submitted_spec(request, task_id)
    structlog.contextvars.bind_contextvars(job_id=spec.id)
    store = JobStore(rt.sync_redis, rt.settings)
    delay, deadline = 0.2, time.monotonic() + rt.settings.lease_s * 4
    while True:
        try:
            created = store.submit(spec)
            break
        except InvalidJobError as exc:
            # A rule only this side knows (the callback allow-list, this worker's limits): refused
            # as a record of its own, never acknowledged into nothing.
            _dead_letter(task_id, (), {"job": request.model_dump(mode="json", exclude_none=True)}, str(exc))
            return "invalid"
        except redis.RedisError as exc:
            if not transient(exc):
                # Redis refuses the write itself (not an outage): requeueing would loop, so the
                # submission is kept (in the raw form of an internal_error dead letter), not lost.
                log.error("submission_failed", error=str(exc))
                rt.dlq.kill(None, DeadReason.INTERNAL_ERROR, f"the job could not be created: {exc}",
                            raw=json.dumps({"id": task_id, "job": request.model_dump(mode="json")}))
                return "internal_error"
            if time.monotonic() > deadline:
                # Redis is away for long: the message goes back on the queue (kombu's reject with
                # requeue; with Redis still away, the reaper's unacked sweep), never acked into nothing.
                log.warning("submission_requeued", error=str(exc))
                raise Reject(str(exc), requeue=True) from None
            log.warning("submission_retry", error=str(exc), wait_s=delay)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    log.info("job_submitted", via="celery", created=created, queue=rt.settings.queue,
             idempotency_key=request.idempotency_key is not None)
    return f"submitted:{spec.id}" if created else f"duplicate:{spec.id}"


def _count_unknown(rt: Runtime) -> None:
    # execute() has logged it: a warning `job_record_missing` with this job_id bound.
    try:
        rt.sync_redis.hincrby(keys.STATS, UNKNOWN_JOB_COUNTER, 1)
    except redis.RedisError as exc:  # a count only
        log.warning("counters_dropped", error=str(exc))


def _dead_letter(task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], error: str) -> None:
    # The record keeps the task id (the message's identity in logs and Flower) with its arguments.
    raw = json.dumps({"id": task_id, "args": args, "kwargs": kwargs}, default=repr)[:MAX_RAW_CHARS]
    payload = kwargs.get("job") if isinstance(kwargs.get("job"), dict) else None
    record_invalid(_job_id_of(kwargs), raw, error, payload)


def _job_id_of(kwargs: dict[str, Any]) -> str | None:
    job = kwargs.get("job")
    job_id = job.get("id") if isinstance(job, dict) else None
    return job_id if isinstance(job_id, str) and job_id.isalnum() and len(job_id) <= 64 else None
