"""A worker's runs ride out a frozen or write-refusing Redis: no duty dies, no innocent job is re-run
or poisoned, and a reclaimed delivery that lands in the process still running the job adopts it.

Each test starts its own redis-server (the session one is shared with other tests) so it can
freeze it or make it refuse writes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from askq.config.settings import Settings
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import JobState
from askq.core.redisserver import EmbeddedRedis
from askq.producers.client import Client
from askq.stack import Stack, default_providers
from askq.workers.jobstate import JobState as WorkerJobState
from askq.workers.reaper import Reaper
from tests.conftest import FAST_ENV, Sim, wait_for, wait_workers


@dataclass
class Own:
    """A stack on a redis-server of this test's own."""

    server: EmbeddedRedis
    stack: Stack
    r: redis.Redis
    client: Client
    settings: Settings

    def log(self, index: int = 0) -> str:
        return (self.stack.var_dir / f"worker{index}.log").read_text(errors="replace")


@pytest.fixture
def own(sim: Sim, tmp_path: Path, settings: Settings) -> Iterator[Own]:
    server = EmbeddedRedis(tmp_path / "own-redis").start()
    stack = Stack(tmp_path / "own-stack", redis_url=server.url, env=dict(FAST_ENV))
    stack.sim_url = sim.url
    r = redis.Redis.from_url(server.url, decode_responses=True)
    mine = settings.model_copy(update={"redis_url": None})
    try:
        yield Own(server, stack, r, Client(mine, r), mine)
    finally:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGCONT)  # never leave a frozen server behind
        r.config_set("maxmemory", 0)
        stack.stop()
        r.close()
        server.stop()


def _providers(sim: Sim, timeout_s: float) -> str:
    return json.dumps(default_providers(sim.url, timeout_s=timeout_s))


def _running(r: redis.Redis, ids: list[str]) -> bool:
    return all(r.hget(keys.job(i), "state") == "running" for i in ids)


def _refuse_writes(r: redis.Redis) -> None:
    """Make Redis answer every write with an OOM error (noeviction, as askq runs it)."""
    r.config_set("maxmemory", 1)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.set("probe", "x")


def test_heartbeat_survives_error_replies_and_renews_again(own: Own, sim: Sim) -> None:
    sim.configure({"latency_s": 0.02, "models": {"primary": {"latency_s": 7.0}}})
    own.stack.start_worker(concurrency=4, ASKQ_PROVIDERS=_providers(sim, 30))
    wait_workers(own.r, 1)
    worker = str(own.r.zrange(keys.WORKERS, 0, -1)[0])
    job_id = own.client.submit("Can I change the delivery address?")
    wait_for(lambda: _running(own.r, [job_id]), 30, what="job running")
    _refuse_writes(own.r)
    # A few heartbeats are answered with OOM (the lease, 3 s, outlives them).
    wait_for(lambda: time.time() - float(own.r.hget(keys.worker(worker), "heartbeat") or 0) > 1.5, 10,
             what="heartbeats refused")
    own.r.config_set("maxmemory", 0)
    restored = time.time()
    wait_for(lambda: float(own.r.hget(keys.worker(worker), "heartbeat") or 0) > restored, 10,
             what="heartbeat beating again")
    wait_for(lambda: float(own.r.hget(keys.job(job_id), "lease_until") or 0) > restored + 1, 10,
             what="lease renewed again")
    view = own.client.wait(job_id, timeout=30)
    assert view.state is JobState.SUCCEEDED and view.delivery == 1
    assert sim.requests("primary") == 1  # never re-run
    assert "heartbeat_failed" in own.log()
    # The reaper thread, refused too meanwhile, still sweeps: a job of a vanished worker moves on.
    orphan = own.client.submit("Where do I find my order number?")
    wait_for(lambda: own.r.hget(keys.job(orphan), "state") == "succeeded", 30, what="orphan answered")
    past = time.time() - 1
    own.r.hset(keys.job(orphan), mapping={"state": "running", "lease": "gone", "lease_until": past})
    own.r.zadd(keys.LEASES, {orphan: past})
    wait_for(lambda: own.r.hget(keys.job(orphan), "delivery") == "2", 20, what="orphan reclaimed by the reaper")


@pytest.mark.parametrize("ending", ["dead", "deferred"])
def test_dead_letter_and_defer_writes_ride_out_error_replies(own: Own, sim: Sim, ending: str) -> None:
    # The primary hangs, the run times out (a hang askq did not foresee) and ends as a dead letter
    # (too old for a durable retry) or a durable retry, while Redis refuses writes.
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": "hang"}]}}})
    age = {"ASKQ_MAX_JOB_AGE_S": "1"} if ending == "dead" else {"ASKQ_DURABLE_RETRY_BASE_S": "60"}
    own.stack.start_worker(concurrency=4, ASKQ_PROVIDERS=_providers(sim, 30), ASKQ_RUN_TIMEOUT_S="3", **age)
    wait_workers(own.r, 1)
    job_id = own.client.submit("Why was my card declined?")
    wait_for(lambda: _running(own.r, [job_id]), 30, what="job running")
    _refuse_writes(own.r)
    wait_for(lambda: "run_timeout" in own.log(), 15, what="run timed out")
    # Refused: ridden out (a retry event) or, unfixed, the task failing with the error.
    wait_for(lambda: any(e in own.log() for e in ("dead_letter_retry", "defer_retry", "raised unexpected")),
             10, what="outcome write refused")
    own.r.config_set("maxmemory", 0)
    if ending == "dead":
        view = own.client.wait(job_id, timeout=20)
        assert view.state is JobState.DEAD and view.reason is DeadReason.EXHAUSTED
        assert own.client.dead_letter(job_id).reason is DeadReason.EXHAUSTED
    else:
        wait_for(lambda: own.r.hget(keys.job(job_id), "retries") == "1", 20, what="durable retry parked")
    # Written by the run that held the job, not after its lease lapsed by a second delivery.
    assert own.r.hget(keys.job(job_id), "delivery") == "1"
    assert sim.requests("primary") == 1


@pytest.mark.parametrize(("fast_path", "freeze_s"), [("false", 5), ("true", 5), ("false", 12)])
def test_redis_freeze_poisons_no_one_and_reruns_nothing(own: Own, sim: Sim, fast_path: str, freeze_s: int) -> None:
    """Issue 10 B's scenario, scaled to the test timings (lease 3 s, heartbeat 0.5 s). A freeze of
    5 s holds the worker's Redis calls until it ends; one of 12 s outlasts their socket timeout
    (10 s), so they fail and are retried."""
    sim.configure({"latency_s": 0.02, "models": {"primary": {"latency_s": freeze_s + 3.0}}})
    own.stack.start_worker(concurrency=30, ASKQ_PROVIDERS=_providers(sim, 40), ASKQ_CACHE_FAST_PATH=fast_path)
    wait_workers(own.r, 1)
    ids = own.client.submit_many([{"question": f"Frozen question {i}?"} for i in range(20)])
    wait_for(lambda: _running(own.r, ids), 30, what="all jobs running")
    assert own.server.proc is not None
    own.server.proc.send_signal(signal.SIGSTOP)
    time.sleep(freeze_s)  # the fault itself, longer than a lease
    own.server.proc.send_signal(signal.SIGCONT)
    views = [own.client.wait(i, timeout=60) for i in ids]
    assert {v.state for v in views} == {JobState.SUCCEEDED}
    # One worker, alive all along: the freeze justifies no second delivery, and no run is repeated.
    assert [v.delivery for v in views] == [1] * len(ids)
    assert sim.requests("primary") == len(ids)
    assert [int(own.r.hget(keys.job(i), "result_writes") or 0) for i in ids] == [1] * len(ids)


def test_reclaimed_delivery_landing_in_the_running_process_adopts_the_run(own: Own, sim: Sim) -> None:
    sim.configure({"latency_s": 0.02, "models": {"primary": {"latency_s": 6.0}}})
    own.stack.start_worker(concurrency=4, ASKQ_PROVIDERS=_providers(sim, 30))
    wait_workers(own.r, 1)
    job_id = own.client.submit("Do you price match?")
    wait_for(lambda: _running(own.r, [job_id]), 30, what="job running")
    token = own.r.hget(keys.job(job_id), "lease")
    reaper = Reaper(own.r, own.settings)

    def reclaim() -> bool:
        # What another process's reaper does once the lease looks expired (a freeze, a slow beat).
        past = time.time() - 1
        own.r.hset(keys.job(job_id), "lease_until", past)
        own.r.zadd(keys.LEASES, {job_id: past})
        return reaper.sweep()["reclaimed"] == 1

    wait_for(reclaim, 10, interval=0.05, what="lease reclaimed")
    assert own.r.hget(keys.job(job_id), "delivery") == "2"
    view = own.client.wait(job_id, timeout=30)
    assert view.state is JobState.SUCCEEDED
    # The second delivery handed the lease back to the run still going: one model call, one
    # write, and the delivery the reclaim counted is taken back (the worker never died).
    assert sim.requests("primary") == 1
    assert own.r.hget(keys.job(job_id), "result_writes") == "1"
    assert view.delivery == 1
    assert own.r.hget(keys.job(job_id), "ended_by") == token
    assert "delivery_adopted" in own.log()


def test_outcome_writes_retried_after_a_lost_reply_land_once(settings: Settings, r: redis.Redis) -> None:
    """A write whose reply was lost in an outage is sent again with the same token: it is done once."""
    client = Client(settings)
    parked, killed = client.submit("Is gift wrapping free?"), client.submit("Do you ship to Iceland?")

    async def scenario() -> list[str]:
        ar = aredis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)  # type: ignore[union-attr]
        jobs = WorkerJobState(ar, settings)
        token = uuid.uuid4().hex
        assert await jobs.claim(parked, 1, token, "test:1") == "ok"
        out = [await jobs.defer(parked, token, time.time() + 60, "all tiers failed") for _ in range(2)]
        assert await jobs.claim(killed, 1, token, "test:1") == "ok"
        await ar.aclose()
        return out

    assert asyncio.run(scenario()) == ["ok", "ok"]
    assert r.hget(keys.job(parked), "retries") == "1" and r.hget(keys.job(parked), "state") == "retrying"
    token = str(r.hget(keys.job(killed), "lease"))
    dlq = DeadLetterQueue(r, settings)
    outcomes = [dlq.kill(killed, DeadReason.EXHAUSTED, "too old", payload={"id": killed}, token=token)
                for _ in range(2)]
    # The worker treats 'terminal' on a retry as done when the job is dead (execution._kill_with_retry).
    assert outcomes == ["ok", "terminal"]
    assert r.hget(keys.STATS, "dead") == "1" and r.zcard(keys.DLQ_INDEX) == 1
