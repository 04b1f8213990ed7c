"""Answering one job: claim it, walk the ladder, store exactly one result (or dead-letter it).

A job goes forward through one path, in production and in the tests alike: the claim carries
the ladder's reads (fast-path cache, first tier's breaker state: Ladder.reads), the ladder
takes their replies and walks the tiers (askq/workers/ladder.py → chain.py), and the result
write carries the bookkeeping the ladder handed back (breaker, cache fill, token usage) and
the job's counters. The happy path costs two Redis round trips.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
import structlog
from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError

from askq.core import clock, counters, keys
from askq.core.deadletter import DeadReason
from askq.core.job import JobSpec, Result, parse_spec, payload_text
from askq.workers.ladder import LadderResult
from askq.workers.riders import Bookkeeping, Prefetched
from askq.workers.runtime import Run, Runtime
from askq.workers.transitions import Claimed

log = structlog.get_logger("askq.job")
T = TypeVar("T")

CRASH_MARKER = "[[askq:crash]]"
# Why a job the ladder did not answer is dead (an exhausted job younger than max_job_age_s is
# deferred instead). internal: askq's or the job's own fault, never retried.
_DEAD_REASON = {"permanent": DeadReason.PERMANENT_ERROR, "internal": DeadReason.INTERNAL_ERROR}


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    """What one delivery of a job did: its outcome, and the ladder's walk when it ran one."""

    outcome: str
    ladder: LadderResult | None = None


async def execute(rt: Runtime, spec: JobSpec, dispatch: int, task_id: str) -> str:
    """Run one delivery of a job; returns what happened (claimed outcome or the finish outcome)."""
    return (await run_delivery(rt, spec, dispatch, task_id)).outcome


async def run_delivery(rt: Runtime, spec: JobSpec, dispatch: int, task_id: str) -> DeliveryRun:
    """execute(), also returning the ladder's walk (what the ladder tests look at)."""
    structlog.contextvars.bind_contextvars(job_id=spec.id, task_id=task_id, attempt=dispatch)
    live = rt.live_run(spec.id)
    if live is not None:
        adopted = await _adopt(rt, live, spec, dispatch)
        if adopted is not None:
            return DeliveryRun(adopted)
    token = uuid.uuid4().hex
    claimed = await _claim_with_retry(rt, spec, dispatch, token)
    if claimed.outcome == "missing":
        # A valid message without a job record (expired after its result TTL, or sent by hand):
        # nothing left to answer; the task counts it (unknown_job_messages) and skips it.
        log.warning("job_record_missing")
        return DeliveryRun("missing")
    if claimed.outcome == "expired":
        # Past its expires_at: never started; this delivery ends it (the reaper would too).
        ended = await _through_outage(rt, "expire_retry", lambda: rt.jobs.expire(spec.id))
        log.info("job_expired", outcome=ended)
        return DeliveryRun("expired")
    if claimed.outcome != "ok":
        log.info("delivery_skipped", reason=claimed.outcome)
        return DeliveryRun(f"skipped:{claimed.outcome}")
    prefetched = claimed.prefetched
    if claimed.stored is not None:
        spec, prefetched = await _stored_job(rt, spec, claimed.stored)
    assert prefetched is not None  # a claim that got the job read what the ladder needs
    if rt.settings.chaos_hooks and CRASH_MARKER in spec.question:
        log.warning("chaos_crash")
        os._exit(137)
    run = rt.start_run(spec.id, token)
    try:
        ladder = LadderResult(outcome="exhausted")
        if not run.cancelled:
            # Its own task, so a cancel stops the provider calls (closing the open HTTP request)
            # and nothing else: this coroutine still ends the run cleanly.
            run.task = asyncio.create_task(_walk(rt, spec, prefetched, ladder))
            try:
                ladder = await run.task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not run.cancelled or (current is not None and current.cancelling()):
                    raise  # this delivery itself is being stopped, not the job
        if run.cancelled:
            # The job's state says cancelled already (CANCEL wrote it): no outcome to write, only
            # the calls it made (a cancelled call is counted as made, never as the provider's fault).
            log.info("job_cancelled", while_="running", ran_s=round(clock.now() - run.started, 3))
            await _counts_with_retry(rt, ladder.counts(), {})
            return DeliveryRun("cancelled", ladder)
        # From here the outcome write ends the lease on purpose; the heartbeat must not call it lost.
        run.finishing = True
        if run.adopting is not None:
            # A delivery is taking this run's lease back right now: write once it holds it.
            await asyncio.shield(run.adopting)
        return DeliveryRun(await _conclude(rt, spec, token, run.started, ladder), ladder)
    finally:
        rt.end_run(run)


async def _walk(rt: Runtime, spec: JobSpec, prefetched: Prefetched, record: LadderResult) -> LadderResult:
    """The ladder for one run, bounded by run_timeout_s; it fills record as it goes."""
    try:
        async with asyncio.timeout(rt.settings.run_timeout_s):
            return await rt.ladder.run(spec, prefetched, record)
    except TimeoutError:
        # Every call is bounded by its timeout, so this is a hang askq did not foresee: the
        # job goes to a durable retry instead of holding its lease (and slot) forever.
        log.warning("run_timeout", timeout_s=rt.settings.run_timeout_s)
        return LadderResult(outcome="exhausted", last_error=f"run exceeded run_timeout_s "
                            f"({rt.settings.run_timeout_s:g} s)")


async def _adopt(rt: Runtime, live: Run, spec: JobSpec, dispatch: int) -> str | None:
    """A new delivery of a job this process is still running (its lease was reclaimed meanwhile,
    e.g. after a Redis or worker freeze): the live run takes its lease back and goes on, and this
    delivery ends at once, instead of a second run calling the model again and both fighting
    over one lease. Returns None when the delivery must run the job itself after all."""
    if live.finishing:
        # The run is writing its outcome; if the write found its lease gone, this delivery runs.
        await live.done.wait()
        return None
    if live.adopting is not None:
        # Another delivery is taking the lease back right now: look again once it is done.
        await asyncio.shield(live.adopting)
        return await _adopt(rt, live, spec, dispatch)
    taking: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    live.adopting = taking
    try:
        claimed = (await _through_outage(
            rt, "claim_retry", lambda: rt.jobs.claim(spec.id, dispatch, live.token, rt.name, adopt=True))).outcome
    finally:
        live.adopting = None
        taking.set_result(None)
    if claimed == "ok":
        live.lost = False
        log.info("delivery_adopted", reason="own run still going")
        return "adopted"
    if claimed == "cancelled":
        live.cancel()  # the run missed the cancel's message: it stops now
    log.info("delivery_skipped", reason=claimed)
    return f"skipped:{claimed}"


async def _stored_job(rt: Runtime, spec: JobSpec, stored: str) -> tuple[JobSpec, Prefetched]:
    """The message named this job at its dispatch but carried other content: answer the stored job.

    The reads that rode on the claim were for the message's copy, so the stored job's are read.
    """
    log.warning("message_payload_differs", job_id=spec.id)
    try:
        await rt.redis.hincrby(keys.STATS, counters.PAYLOAD_MISMATCHES.field(), 1)
    except redis.RedisError as exc:  # a count only: the job is claimed and must run now
        log.warning("counters_dropped", error=str(exc))
    spec = parse_spec(json.loads(stored))
    reads = rt.ladder.reads(spec)
    return spec, await _through_outage(rt, "claim_retry", lambda: reads.fetch(rt.redis))


def payload_digest(spec: JobSpec) -> str:
    """sha1 of a payload as the job hash stores it (what CLAIM compares the stored one against)."""
    return hashlib.sha1(payload_text(spec.model_dump(mode="json")).encode()).hexdigest()


async def _conclude(rt: Runtime, spec: JobSpec, token: str, started: float, ladder: LadderResult) -> str:
    counts = ladder.counts()
    calls, faults = ladder.calls_made, ladder.faults
    health = {"jobs": 1.0, "calls": float(calls), "faults": float(faults), "retries": float(ladder.retries)}
    if ladder.outcome == "answered" and ladder.answer is not None:
        now = clock.now()
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
        outcome = await _finish_with_retry(rt, result, token, counts, health, ladder.bookkeeping)
        log.info("job_finished", source=result.source, degraded=result.degraded, outcome=outcome,
                 attempts=calls, latency_s=result.latency_s)
        return outcome
    if ladder.outcome == "exhausted" and clock.now() - spec.created < rt.settings.max_job_age_s:
        return await _defer(rt, spec, token, ladder)
    reason = _DEAD_REASON.get(ladder.outcome, DeadReason.EXHAUSTED)
    health |= {"dead": 1.0}
    outcome = await _kill_with_retry(rt, spec, token, reason, ladder)
    log.warning("job_dead", reason=reason.value, error=ladder.last_error, outcome=outcome)
    await _counts_with_retry(rt, counts, health)
    return f"dead:{outcome}"


async def _kill_with_retry(rt: Runtime, spec: JobSpec, token: str, reason: DeadReason, ladder: LadderResult) -> str:
    """Dead-letter the job this run holds, riding out a short Redis outage like the result write."""
    tries = 0

    async def attempt() -> str:
        nonlocal tries
        tries += 1
        outcome = await asyncio.to_thread(
            rt.dlq.kill, spec.id, reason, ladder.last_error, spec.model_dump(mode="json"), None,
            ladder.attempts, 0, token,
        )
        if outcome == "terminal" and tries > 1:
            # A try whose reply was lost may have written it: if the job is dead now, this run did it.
            state = await rt.redis.hget(keys.job(spec.id), "state")
            return "ok" if state == "dead" else outcome
        return outcome

    return await _through_outage(rt, "dead_letter_retry", attempt)


async def _counts_with_retry(rt: Runtime, counts: Counter[str], health: dict[str, float]) -> None:
    """A job's counters once its outcome is written: ridden out like it, then given up (logged)."""
    try:
        await _through_outage(rt, "counters_retry", lambda: rt.jobs.add_counts(counts, health))
    except redis.RedisError as exc:
        log.warning("counters_dropped", error=str(exc))


async def _defer(rt: Runtime, spec: JobSpec, token: str, ladder: LadderResult) -> str:
    """Every tier failed transiently: park the job for a durable retry instead of sleeping on it."""
    retries = int(await _through_outage(rt, "defer_retry", lambda: rt.redis.hget(keys.job(spec.id), "retries"))
                  or 0)
    s = rt.settings
    delay = random.uniform(0, min(s.durable_retry_cap_s, s.durable_retry_base_s * 2**retries))
    outcome = await _through_outage(
        rt, "defer_retry", lambda: rt.jobs.defer(spec.id, token, clock.now() + delay, ladder.last_error))
    await _counts_with_retry(rt, ladder.counts(), {"durable_retries": 1.0})
    log.info("job_deferred", delay_s=round(delay, 2), retries=retries, outcome=outcome)
    return f"deferred:{outcome}"


# Errors that mean "Redis cannot take this right now", not "this command is wrong": a lost
# connection, a timeout, and error replies such as out of memory under noeviction, a replica
# after a failover, loading, busy with a script. A script that hit one says so after a '-'.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, OutOfMemoryError, ReadOnlyError, MasterDownError,
                    TryAgainError)
TRANSIENT_CODES = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS")


def transient(exc: Exception) -> bool:
    """Whether a Redis error is an outage to ride out rather than a fault to report."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and (
        text.startswith(TRANSIENT_CODES) or any(f"-{code} " in text for code in TRANSIENT_CODES))


async def _through_outage(
    rt: Runtime, event: str, attempt: Callable[[], Awaitable[T]],
    on_error: Callable[[Exception], None] | None = None,
) -> T:
    """Run attempt(), retrying through a short Redis outage (up to four leases) with backoff.

    Every write a run makes goes through here (claim, result, dead letter, defer, counters):
    a write that gave up would leave the job running under a lease nobody renews, to be run
    again, LLM calls and all, once the lease lapses.
    """
    delay = 0.2
    deadline = time.monotonic() + rt.settings.lease_s * 4
    while True:
        try:
            return await attempt()
        except redis.RedisError as exc:
            if not transient(exc):
                raise
            if on_error is not None:
                on_error(exc)
            if time.monotonic() > deadline:
                raise
            log.warning(event, error=str(exc), wait_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _claim_with_retry(rt: Runtime, spec: JobSpec, dispatch: int, token: str) -> Claimed:
    """Claim the job (with the ladder's reads), riding out a Redis restart: failing here would ack
    a message never run. Also returns the stored payload when the message's copy differs."""
    digest, reads = payload_digest(spec), rt.ladder.reads(spec)
    return await _through_outage(
        rt, "claim_retry", lambda: rt.jobs.claim(spec.id, dispatch, token, rt.name, digest, reads))


async def _finish_with_retry(
    rt: Runtime, result: Result, token: str, counts: Counter[str], health: dict[str, float],
    bookkeeping: Bookkeeping | None,
) -> str:
    """Store the result, riding out a short Redis outage rather than throwing the answer away.

    The ladder's bookkeeping rides on the first try only: it is not worth retrying, and a try
    that failed may have run it already.
    """
    carried, dropped = bookkeeping, False

    async def attempt() -> str:
        nonlocal carried
        ride, carried = carried, None
        return await rt.jobs.finish(result, token, counts, health, ride)

    def drop_bookkeeping(exc: Exception) -> None:
        nonlocal dropped
        if bookkeeping is not None and not dropped:
            dropped = True
            bookkeeping.dropped(exc)

    return await _through_outage(rt, "result_write_retry", attempt, drop_bookkeeping)
