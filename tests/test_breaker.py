"""The shared circuit breaker: one probe across the cluster, skipping without requests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import redis

from askq.config.settings import BreakerSettings, Settings
from askq.core import keys
from askq.core.connection import connect_async
from askq.producers.client import Client
from askq.stack import Stack
from askq.workers.breaker import Breaker, Permit
from tests.conftest import Sim, wait_for, wait_workers
from tests.ladderkit import job, run_ladder, settings_with


def test_exactly_one_probe_among_many_concurrent_callers(settings: Settings, r: redis.Redis) -> None:
    cfg = BreakerSettings(min_requests=2, failure_rate=0.5, cooldown_s=0.3, probe_timeout_s=30)

    async def scenario() -> tuple[list[Permit], list[Permit], str, str]:
        client = connect_async(settings)
        breakers = [Breaker(client, cfg) for _ in range(4)]  # as if in four processes
        b = breakers[0]
        await b.record("p", False, Permit.CALL)
        assert (await b.record("p", False, Permit.CALL)).changed  # opened
        assert await b.permit("p") is Permit.SKIP
        await asyncio.sleep(0.4)
        first = list(await asyncio.gather(*(breakers[i % 4].permit("p") for i in range(60))))
        await b.release("p")  # the probe never reached the provider: the next caller probes
        second = list(await asyncio.gather(*(breakers[i % 4].permit("p") for i in range(60))))
        closed = await b.record("p", True, Permit.PROBE)
        state = await b.state("p")
        await client.aclose()
        return first, second, f"{closed.state}:{closed.changed}", state

    first, second, closed, state = asyncio.run(scenario())
    assert first.count(Permit.PROBE) == 1 and first.count(Permit.SKIP) == 59
    assert second.count(Permit.PROBE) == 1
    assert closed == "closed:True" and state == "closed"
    stats = r.hgetall(keys.STATS)
    assert stats["breaker_opened:p"] == "1" and stats["breaker_closed:p"] == "1"


def test_failed_probe_reopens(settings: Settings, r: redis.Redis) -> None:
    cfg = BreakerSettings(min_requests=1, cooldown_s=0.2)

    async def scenario() -> list[Permit]:
        client = connect_async(settings)
        b = Breaker(client, cfg)
        await b.record("p", False, Permit.CALL)
        await asyncio.sleep(0.25)
        probe = await b.permit("p")
        await b.record("p", False, probe)
        after = await b.permit("p")
        await client.aclose()
        return [probe, after]

    assert asyncio.run(scenario()) == [Permit.PROBE, Permit.SKIP]
    assert r.hget(keys.STATS, "breaker_opened:p") == "2"


def test_caller_errors_never_open_the_breaker_but_auth_errors_do(settings: Settings, sim: Sim,
                                                                  r: redis.Redis) -> None:
    s = settings_with(settings, sim.url, breaker={"min_requests": 3, "cooldown_s": 60})
    run_ladder(s, [job(f"Question {i} [[sim:bad_request@primary]]") for i in range(5)])
    assert r.hget(keys.breaker("primary"), "state") in (None, "closed")
    run_ladder(s, [job(f"Question {i} [[sim:auth@primary]]") for i in range(5)])
    # 5 refused requests counted as successes, then 5 failures: a 50 % failure rate opens it.
    assert r.hget(keys.breaker("primary"), "state") == "open"
    run_ladder(s, [job("One more [[sim:auth@primary]]")])
    assert sim.requests("primary") == 10  # once open, no request reaches the primary


def _submit(client: Client, n: int, tag: str) -> list[str]:
    return client.submit_many([{"question": f"{tag} question number {i}?"} for i in range(n)])


def _wait_done(client: Client, ids: list[str]) -> None:
    for job_id in ids:
        view = client.wait(job_id, timeout=60)
        assert view.state == "succeeded"


def _workers_that_ran(r: redis.Redis, ids: list[str]) -> set[str]:
    return {str(r.hget(keys.job(i), "worker") or "") for i in ids}


def test_breaker_opens_skips_and_closes_after_one_probe_across_two_workers(
    stack: Stack, r: redis.Redis, sim: Sim, settings: Settings
) -> None:
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": "server_error"}]}}})
    env = {"ASKQ_BREAKER__MIN_REQUESTS": "4", "ASKQ_BREAKER__COOLDOWN_S": "4", "ASKQ_CACHE_FAST_PATH": "false"}
    stack.start_worker(concurrency=4, **env)
    stack.start_worker(concurrency=4, **env)
    wait_workers(r, 2)
    client = Client(settings)

    first = _submit(client, 8, "first")
    _wait_done(client, first)  # the primary fails: its breaker opens
    assert r.hget(keys.breaker("primary"), "state") == "open"
    before = sim.requests("primary")
    probes = int(r.hget(keys.STATS, "breaker_probes:primary") or 0)
    ids = _submit(client, 12, "second")
    _wait_done(client, ids)
    # While open, no request reaches the primary (a probe would only follow the cooldown).
    probes_now = int(r.hget(keys.STATS, "breaker_probes:primary") or 0)
    assert sim.requests("primary") - before == probes_now - probes
    assert all(v.result is not None and v.result.source == "secondary"
               for v in client.store.get_many(ids).values() if v is not None)
    # Both processes must be taking jobs before the half-open phase, or one probe would be trivial.
    # Which worker Celery hands a message to is up to scheduling, so give it rounds until both have.
    seen = _workers_that_ran(r, first + ids)
    for round_ in range(10):
        if len(seen) == 2:
            break
        more = _submit(client, 8, f"spread{round_}")
        _wait_done(client, more)
        seen |= _workers_that_ran(r, more)
    assert len(seen) == 2, seen

    # The primary recovers, slowly: many jobs arrive at both workers while its probe runs.
    sim.configure({"latency_s": 0.02, "models": {"primary": {"latency_s": 1.0}}})
    opened_at = float(r.hget(keys.breaker("primary"), "opened_at") or 0)
    wait_for(lambda: time.time() > opened_at + 4.2, timeout=10, what="the cooldown")
    probes = int(r.hget(keys.STATS, "breaker_probes:primary") or 0)
    ids = _submit(client, 30, "third")
    _wait_done(client, ids)
    assert int(r.hget(keys.STATS, "breaker_probes:primary") or 0) - probes == 1
    assert r.hget(keys.breaker("primary"), "state") == "closed"
    arrivals = sorted(sim.stats()["arrivals"]["primary"])
    # The probe was alone: nothing else reached the primary until its 1 s answer came back.
    assert all(t >= arrivals[0] + 1.0 for t in arrivals[1:])

    # The counters are readable by `askq stats`.
    client.submit("first question number 0?")  # a cache hit (fast path off: the cache tier is skipped)
    out = subprocess.run([sys.executable, "-m", "askq", "stats", "--json"], env=stack.env(),
                         capture_output=True, text=True, check=True)
    counters = json.loads(out.stdout)
    assert counters["breaker_opened:primary"] >= 1 and counters["breaker_closed:primary"] == 1
    assert counters["fallbacks"] >= 20 and counters["retries:primary"] >= 1
    assert counters["attempts:primary"] >= 4 and counters["attempts:secondary"] >= 20
