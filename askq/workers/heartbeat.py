"""The worker's pulse: renews the leases of its running jobs (stopping the cancelled ones) and
publishes its heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import redis
import structlog

from askq.core import clock, keys
from askq.core.redisserver import moved_from
from askq.workers.runtime import Runtime

log = structlog.get_logger("askq.heartbeat")

WORKER_RECORD_TTL_S = 3600


async def renew_leases(rt: Runtime) -> None:
    """Renew the lease of every run of this process; a run whose lease is gone is logged once."""
    runs = list(rt.runs.values())
    lost_runs, cancelled_runs = await rt.jobs.renew([(run.job_id, run.token) for run in runs])
    lost, cancelled = set(lost_runs), set(cancelled_runs)
    for run in runs:
        if (run.job_id, run.token) in cancelled:
            # The durable path: this worker missed the cancel's message (or had no listener then).
            if run.cancel():
                log.info("run_cancelled", job_id=run.job_id, heard_by="renewal")
        elif (run.job_id, run.token) not in lost:
            run.lost = False
        elif not run.lost and not run.finishing:
            # A result written meanwhile ends its lease on purpose (finishing, or already done).
            run.lost = True
            log.warning("lease_lost", job_id=run.job_id)


async def beat_once(rt: Runtime) -> None:
    await renew_leases(rt)
    now = await clock.aread(rt.redis)
    # The longest-running job decides whether this worker is stalled.
    oldest = max((now - run.started for run in rt.runs.values()), default=0.0)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.zadd(keys.WORKERS, {rt.name: now})
    pipe.hset(
        keys.worker(rt.name),
        mapping={
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": rt.started,
            "heartbeat": now,
            "inflight": len(rt.runs),
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
    """Beat every heartbeat_s until stop is set; Redis outages and error replies (OOM, READONLY
    after a failover) are logged and ridden out. Anything else ends this coroutine, and
    Runtime.spawn's supervisor logs it and starts it again."""
    while not stop.is_set():
        exit_if_redis_moved(rt)
        started = time.monotonic()
        try:
            await beat_once(rt)
        except (redis.RedisError, OSError) as exc:
            log.warning("heartbeat_failed", error=str(exc))
        # Timed from the start of the beat: one that waited out a frozen Redis is followed at
        # once by a fresh one, before a reaper can judge leases by its stale renewal.
        wait_s = max(0.0, rt.settings.heartbeat_s - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)


async def retire(rt: Runtime) -> None:
    """Remove this worker from the live list on a clean shutdown."""
    pipe = rt.redis.pipeline(transaction=False)
    pipe.zrem(keys.WORKERS, rt.name)
    pipe.delete(keys.worker(rt.name))
    await pipe.execute()
