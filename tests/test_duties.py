"""A worker's background duties (heartbeat, reaper) never die silently: each failure is logged and
the duty goes on or is started again."""

from __future__ import annotations

import asyncio
import threading
import time

import redis
from structlog.testing import capture_logs

from askq.config.settings import Settings
from askq.core import keys
from askq.producers.client import Client
from askq.workers import reaper
from askq.workers.runtime import supervise
from tests.conftest import wait_for


def test_a_duty_that_dies_is_logged_and_started_again() -> None:
    calls: list[float] = []

    async def scenario() -> None:
        stop = asyncio.Event()

        async def duty() -> None:
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
            if len(calls) == 2:
                raise RuntimeError("a bug in the duty")
            stop.set()

        await asyncio.wait_for(supervise("heartbeat", duty, stop), 10)

    with capture_logs() as logs:
        asyncio.run(scenario())
    assert len(calls) == 3
    failed = [e for e in logs if e["event"] == "duty_failed"]
    assert [e["duty"] for e in failed] == ["heartbeat", "heartbeat"]
    assert "OutOfMemoryError" in failed[0]["error"] and "a bug in the duty" in failed[1]["error"]
    assert sum(1 for e in logs if e["event"] == "duty_restarted") == 2
    # Backed off between restarts, the second wait longer than the first.
    assert calls[2] - calls[1] > calls[1] - calls[0] > 0.3


def test_reaper_thread_outlives_failures_and_sweeps_after(settings: Settings, r: redis.Redis) -> None:
    job_id = Client(settings).submit("Is the store open on Sunday?")
    past = time.time() - 1
    # A job whose worker is gone: running under a lease that expired.
    r.hset(keys.job(job_id), mapping={"state": "running", "lease": "gone", "lease_until": past})
    r.zadd(keys.LEASES, {job_id: past})
    r.lpop(settings.queue)
    hook_calls = 0

    def before_sweep() -> None:
        nonlocal hook_calls
        hook_calls += 1
        if hook_calls <= 2:
            raise RuntimeError("renewing this process's own leases failed")

    stop = threading.Event()
    with capture_logs() as logs:
        thread = reaper.run_in_thread(r, settings, "test-reaper", stop, before_sweep)
        try:
            wait_for(lambda: r.hget(keys.job(job_id), "state") == "queued", 20, what="expired lease reclaimed")
        finally:
            stop.set()
            thread.join(10)
    assert not thread.is_alive()
    assert hook_calls >= 3
    assert r.hget(keys.job(job_id), "delivery") == "2"
    # No sweep (and no lock) while the hook failed: the sweep that reclaimed came after.
    assert sum(1 for e in logs if e["event"] == "reaper_sweep_failed") == 2
