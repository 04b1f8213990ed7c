"""Hosts whose clocks are 30 s off: leases, the reaper and durable retries run on Redis's clock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
import redis

from askq.bench import faketime
from askq.config.settings import Settings
from askq.core import clock, keys
from askq.core.job import JobState
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers

pytestmark = pytest.mark.skipif(faketime.library() is None, reason="libfaketime missing: apt-get install faketime")


def test_workers_30s_ahead_and_behind_never_steal_or_rerun_each_others_jobs(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    # Jobs run across several heartbeats and reaper sweeps (lease 3 s in the stack's FAST_ENV):
    # a lease judged on a clock 30 s off looks expired to one of the two workers' reapers.
    sim.configure({"latency_s": 4.0})
    # The worker ahead starts first and takes the reaper's lock: on its clock every lease of the
    # worker behind has expired (and on the behind one's, none of anyone's ever does).
    stack.start_worker(concurrency=4, **faketime.skewed_env(+30))
    wait_for(lambda: r.get(keys.REAPER_LOCK), 60, what="the worker ahead holding the reaper lock")
    stack.start_worker(concurrency=4, **faketime.skewed_env(-30))
    wait_workers(r, 2)
    client = Client(settings)
    ids = client.submit_many([{"question": f"Where is parcel {i}?"} for i in range(8)])
    views = client.wait_many(ids, timeout=90)
    assert all(v.state is JobState.SUCCEEDED for v in views.values()), views
    assert [v.delivery for v in views.values()] == [1] * len(ids), "a live worker's job was reclaimed"
    assert sim.requests("primary") == len(ids), "LLM calls wasted on double runs"
    assert sum(int(r.hget(keys.job(i), "result_writes") or 0) for i in ids) == len(ids)
    # Heartbeats are stamped on Redis's clock: both workers look alive, neither 30 s stale or ahead.
    beats = dict(r.zrange(keys.WORKERS, 0, -1, withscores=True))
    server_now = float(r.time()[0])
    assert all(abs(server_now - beat) < 10 for beat in beats.values()), beats


def test_a_durable_retry_parked_by_a_host_behind_is_not_due_early(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    # Every tier fails: the job is parked for a durable retry, due on Redis's clock.
    sim.configure({"latency_s": 0.02, "faults": [{"kind": "server_error", "status": 503}]})
    stack.start_worker(concurrency=2, **faketime.skewed_env(+30), ASKQ_ON_EXHAUSTED="retry",
                       ASKQ_DURABLE_RETRY_BASE_S="20",
                       ASKQ_DURABLE_RETRY_CAP_S="20")
    wait_workers(r, 1)
    job_id = Client(settings).submit("Where is my parcel?")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not r.zscore(keys.RETRIES, job_id):
        time.sleep(0.1)
    due = r.zscore(keys.RETRIES, job_id)
    assert due is not None, "job was not parked for a durable retry"
    seconds, micros = r.time()
    assert due <= seconds + micros / 1e6 + 20 + 1, "due time stamped on the skewed host's clock"


def test_server_clock_reads_time_once_and_carries_it_forward_on_the_monotonic_clock(r: redis.Redis) -> None:
    ticks = [100.0]
    server = clock.ServerClock(resync_s=10, monotonic=lambda: ticks[0])
    seconds, micros = r.time()
    first = server.read(r)
    assert abs(first - (seconds + micros / 1e6)) < 1
    calls_before = r.info("commandstats").get("cmdstat_time", {}).get("calls", 0)
    ticks[0] += 5  # five seconds later on this host's monotonic clock, whatever its wall clock says
    assert server.read(r) == pytest.approx(first + 5)
    assert r.info("commandstats").get("cmdstat_time", {}).get("calls", 0) == calls_before  # no new reading
    ticks[0] += 6  # past resync_s: read again
    server.read(r)
    assert r.info("commandstats")["cmdstat_time"]["calls"] == calls_before + 1


# Run on a host whose clock is off: one rate-limited call and one failed call recorded in the breaker.
_WINDOWS = """
import asyncio, sys
from askq.config.settings import ProviderSettings, load_settings
from askq.core.connection import connect_async
from askq.workers.breaker import Breaker, Permit
from askq.workers.ratelimit import RateLimiter

async def main() -> None:
    settings = load_settings(redis_url=sys.argv[1])
    client = connect_async(settings, sys.argv[1])
    provider = ProviderSettings(name="skewed", base_url="http://x/v1", model="m", requests_per_minute=10,
                                tokens_per_minute=1000)
    grant = await RateLimiter(client, 1.0).acquire(provider, 5)
    await Breaker(client, settings.breaker).record("skewed", False, Permit.CALL)
    print(grant.minute)

asyncio.run(main())
"""


@pytest.mark.parametrize("offset_s", [+90, -90])
def test_rate_limit_minute_and_breaker_window_are_on_redis_clock(r: redis.Redis, redis_server: Any,
                                                                 offset_s: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | faketime.skewed_env(offset_s)
    done = subprocess.run([sys.executable, "-c", _WINDOWS, redis_server.url], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seconds, micros = r.time()
    now = seconds + micros / 1e6
    # The minute charged is Redis's (a host 90 s off would charge another minute's budget).
    assert int(done.stdout.strip()) in {int((now - 5) // 60), int(now // 60)}
    (_, stamp), = r.zrange(keys.rate_requests("skewed"), 0, -1, withscores=True)
    assert abs(stamp - now) < 5
    # The breaker's window counts the failure at Redis's now: it neither ages out at once nor lingers.
    seconds_counted = [float(field.split(":")[0]) for field in r.hkeys(keys.breaker_window("skewed"))]
    assert seconds_counted and all(abs(s - now) < 5 for s in seconds_counted), seconds_counted
