"""Answering one job: claim it, walk the ladder, store exactly one result (or dead-letter it).

The happy path costs two Redis round trips: the claim carries the ladder's reads (fast-path
cache, first tier's breaker state), the result write carries the ladder's success
bookkeeping (breaker, cache fill, token usage) and the job's counters.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
import structlog

from core import keys
from core.job import DeadReason, JobSpec, Result
from workers.ladder import LadderResult, Prefetched
from workers.runtime import Runtime

log = structlog.get_logger("askq.job")
T = TypeVar("T")

CRASH_MARKER = "[[askq:crash]]"
# Why a job the ladder did not answer is dead (an exhausted job younger than max_job_age_s is
# deferred instead). internal: askq's or the job's own fault, never retried.
_DEAD_REASON = {"permanent": DeadReason.PERMANENT_ERROR, "internal": DeadReason.INTERNAL_ERROR}


async def execute(rt: Runtime, spec: JobSpec, dispatch: int, task_id: str) -> str:
    """Run one delivery of a job; returns what happened (claimed outcome or the finish outcome)."""
    structlog.contextvars.bind_contextvars(job_id=spec.id, task_id=task_id, attempt=dispatch)
    token = uuid.uuid4().hex
    claimed, prefetched = await _claim_with_retry(rt, spec, dispatch, token)
    if claimed == "missing":
        # A valid message without a job record (expired after its result TTL, or sent by hand):
        # there is no job to answer for, so it is acknowledged and skipped.
        log.warning("job_record_missing")
        return "missing"
    if claimed != "ok":
        log.info("delivery_skipped", reason=claimed)
        return f"skipped:{claimed}"
    if rt.settings.chaos_hooks and CRASH_MARKER in spec.question:
        log.warning("chaos_crash")
        os._exit(137)
    rt.held[spec.id] = token
    started = time.time()
    rt.running_since[spec.id] = started
    try:
        try:
            async with asyncio.timeout(rt.settings.run_timeout_s):
                ladder = await rt.ladder.run(spec, prefetched, defer_success=True)
        except TimeoutError:
            # Every call is bounded by its timeout, so this is a hang askq did not foresee: the
            # job goes to a durable retry instead of holding its lease (and slot) forever.
            log.warning("run_timeout", timeout_s=rt.settings.run_timeout_s)
            ladder = LadderResult(outcome="exhausted", last_error=f"run exceeded run_timeout_s "
                                  f"({rt.settings.run_timeout_s:g} s)")
        # From here the result write ends the lease on purpose; the heartbeat must not call it lost.
        rt.finishing.add(spec.id)
        return await _conclude(rt, spec, token, started, ladder)
    finally:
        rt.finishing.discard(spec.id)
        rt.held.pop(spec.id, None)
        rt.running_since.pop(spec.id, None)
        rt.completed += 1
        rt.last_progress = time.time()


async def _conclude(rt: Runtime, spec: JobSpec, token: str, started: float, ladder: LadderResult) -> str:
    counters = ladder.counters
    faults = sum(v for k, v in counters.items() if k.startswith("errors:"))
    calls = sum(v for k, v in counters.items() if k.startswith("attempts:"))
    health = {
        "jobs": 1.0,
        "calls": float(calls),
        "faults": float(faults),
        "retries": float(sum(v for k, v in counters.items() if k.startswith("retries:"))),
    }
    if ladder.outcome == "answered" and ladder.answer is not None:
        now = time.time()
        result = Result(
            job_id=spec.id,
            answer=ladder.answer.text,
            source=ladder.source,
            model=ladder.answer.model or None,
            degraded=ladder.degraded,
            attempts=calls,
            latency_s=round(now - spec.created, 4),
            usage=ladder.answer.usage,
            started=started,
            finished=now,
        )
        health |= {"succeeded": 1.0, "degraded": float(ladder.degraded), "latency_sum_s": now - spec.created,
                   "run_sum_s": now - started, "recovered": float(faults > 0 and not ladder.degraded)}
        outcome = await _finish_with_retry(rt, result, token, counters, health, ladder)
        log.info("job_finished", source=result.source, degraded=result.degraded, outcome=outcome,
                 attempts=calls, latency_s=result.latency_s)
        return outcome
    if ladder.outcome == "exhausted" and time.time() - spec.created < rt.settings.max_job_age_s:
        return await _defer(rt, spec, token, ladder)
    reason = _DEAD_REASON.get(ladder.outcome, DeadReason.EXHAUSTED)
    health |= {"dead": 1.0}
    outcome = await asyncio.to_thread(
        rt.dlq.kill, spec.id, reason, ladder.last_error, spec.model_dump(mode="json"), None,
        ladder.attempts, 0, token,
    )
    log.warning("job_dead", reason=reason.value, error=ladder.last_error, outcome=outcome)
    await rt.jobs.finish_counters(counters, health)
    return f"dead:{outcome}"


async def _defer(rt: Runtime, spec: JobSpec, token: str, ladder: LadderResult) -> str:
    """Every tier failed transiently: park the job for a durable retry instead of sleeping on it."""
    retries = int(await rt.redis.hget(keys.job(spec.id), "retries") or 0)
    s = rt.settings
    delay = random.uniform(0, min(s.durable_retry_cap_s, s.durable_retry_base_s * 2**retries))
    outcome = await rt.jobs.defer(spec.id, token, time.time() + delay, ladder.last_error)
    await rt.jobs.finish_counters(ladder.counters, {"durable_retries": 1.0})
    log.info("job_deferred", delay_s=round(delay, 2), retries=retries, outcome=outcome)
    return f"deferred:{outcome}"


async def _through_outage(
    rt: Runtime, event: str, attempt: Callable[[], Awaitable[T]],
    on_error: Callable[[Exception], None] | None = None,
) -> T:
    """Run attempt(), retrying through a short Redis outage (up to four leases) with backoff."""
    delay = 0.2
    deadline = time.monotonic() + rt.settings.lease_s * 4
    while True:
        try:
            return await attempt()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if on_error is not None:
                on_error(exc)
            if time.monotonic() > deadline:
                raise
            log.warning(event, error=str(exc), wait_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _claim_with_retry(rt: Runtime, spec: JobSpec, dispatch: int, token: str) -> tuple[str, Prefetched]:
    """Claim the job (with the ladder's reads), riding out a Redis restart: failing here would ack
    a message never run."""

    async def attempt() -> tuple[str, Prefetched]:
        claimed, replies = await rt.jobs.claim_with(
            spec.id, dispatch, token, rt.name, lambda pipe: rt.ladder.queue_prefetch(pipe, spec))
        return claimed, rt.ladder.parse_prefetch(replies)

    return await _through_outage(rt, "claim_retry", attempt)


async def _finish_with_retry(
    rt: Runtime, result: Result, token: str, counters: Counter[str], health: dict[str, float], ladder: LadderResult
) -> str:
    """Store the result, riding out a short Redis outage rather than throwing the answer away.

    The ladder's success bookkeeping rides on the first try only: it is not worth retrying, and
    a try that failed may have run it already.
    """

    async def attempt() -> str:
        if ladder.success is None:
            return await rt.jobs.finish(result, token, counters, health)
        outcome, ahead = await rt.jobs.finish_with(
            result, token, counters, health, lambda pipe: rt.ladder.queue_success(pipe, ladder))
        await rt.ladder.settle_success(ladder, ahead)
        return outcome

    def drop_bookkeeping(exc: Exception) -> None:
        if ladder.success is not None:
            rt.ladder.bookkeeping_failed(ladder, exc)

    return await _through_outage(rt, "result_write_retry", attempt, drop_bookkeeping)
