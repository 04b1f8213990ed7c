"""The worker's pulse: renews the leases of its running jobs and publishes its heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import redis
import structlog

from core import keys
from core.redisserver import moved_from
from workers.runtime import Runtime

log = structlog.get_logger("askq.heartbeat")

WORKER_RECORD_TTL_S = 3600


async def beat_once(rt: Runtime) -> None:
    lost = await rt.jobs.renew(dict(rt.held))
    for job_id in lost:
        # A result written meanwhile ends its lease on purpose (finishing, or already done).
        if job_id in rt.held and job_id not in rt.finishing:
            log.warning("lease_lost", job_id=job_id)
    now = time.time()
    # The longest-running job decides whether this worker is stalled.
    oldest = max((now - s for s in rt.running_since.values()), default=0.0)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.zadd(keys.WORKERS, {rt.name: now})
    pipe.hset(
        keys.worker(rt.name),
        mapping={
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": rt.started,
            "heartbeat": now,
            "inflight": len(rt.held),
            "completed": rt.completed,
            "last_progress": rt.last_progress,
            "oldest_job_s": round(oldest, 3),
            "concurrency": rt.settings.worker_concurrency,
            # Readers judge this worker by its own timings, not by their settings.
            "heartbeat_s": rt.settings.heartbeat_s,
            "job_deadline_s": rt.settings.job_deadline_s,
        },
    )
    pipe.expire(keys.worker(rt.name), WORKER_RECORD_TTL_S)
    await pipe.execute()


def exit_if_redis_moved(rt: Runtime) -> None:
    """The embedded Redis came back on another address: exit, so the worker is restarted on it.

    Staying would leave a live process consuming from a server nobody else uses any more.
    """
    moved = None if rt.settings.redis_url else moved_from(rt.settings.var_dir, rt.url)
    if moved is not None:
        log.error("redis_moved", old=rt.url.rsplit("@", 1)[-1], new=moved.rsplit("@", 1)[-1])
        os._exit(75)  # EX_TEMPFAIL: a supervisor restarting the worker is the cure


async def run(rt: Runtime, stop: asyncio.Event) -> None:
    """Beat every heartbeat_s until stop is set; Redis outages are logged and ridden out."""
    while not stop.is_set():
        exit_if_redis_moved(rt)
        try:
            await beat_once(rt)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            log.warning("heartbeat_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rt.settings.heartbeat_s)


async def retire(rt: Runtime) -> None:
    """Remove this worker from the live list on a clean shutdown."""
    pipe = rt.redis.pipeline(transaction=False)
    pipe.zrem(keys.WORKERS, rt.name)
    pipe.delete(keys.worker(rt.name))
    await pipe.execute()
