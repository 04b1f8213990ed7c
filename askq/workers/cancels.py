"""The cancel listener: a worker hears at once that a job it runs was cancelled, and stops it.

CANCEL publishes the id of every running job it cancels on one channel; each worker process
keeps one subscription (one idle Redis connection) and stops its runs of that job, closing the
provider request in flight. A message missed (the listener reconnecting, Redis restarted) is
caught by the next lease renewal, which reports cancelled jobs (heartbeat_s later at most).
Nothing here is on a job's path: a job that is never cancelled costs the listener nothing.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis
import structlog

from askq.core import keys
from askq.workers.runtime import Runtime

log = structlog.get_logger("askq.cancels")

# Seconds one read waits for a message, so a stop is noticed this soon; and backoff after an error.
POLL_S = 1.0
RETRY_S = (0.5, 10.0)


async def listen(rt: Runtime, stop: asyncio.Event) -> None:
    """Stop the runs of every cancelled job this process runs, until stop is set.

    Redis outages and error replies are logged and ridden out with backoff (the renewal covers
    what is missed meanwhile); anything else ends this coroutine and Runtime.spawn restarts it.
    """
    delay = RETRY_S[0]
    while not stop.is_set():
        try:
            await _subscribed(rt, stop)
        except (redis.RedisError, OSError) as exc:
            log.warning("cancel_listener_failed", error=str(exc), retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_S[1])
        else:
            delay = RETRY_S[0]


async def _subscribed(rt: Runtime, stop: asyncio.Event) -> None:
    pubsub = rt.redis.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(keys.CANCELS)
        while not stop.is_set():
            message = await pubsub.get_message(timeout=POLL_S)
            if message is None or message.get("type") != "message":
                continue
            job_id = message["data"]
            job_id = job_id.decode() if isinstance(job_id, bytes) else str(job_id)
            stopped = rt.cancel_job(job_id)
            if stopped:
                log.info("run_cancelled", job_id=job_id, heard_by="message", runs=stopped)
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
