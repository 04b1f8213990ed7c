"""Jobs survive their workers: kill -9, SIGSTOP/SIGCONT, poison, abandoned prefetch, Redis restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from askq.config.settings import Settings
from askq.core import keys, message
from askq.core.deadletter import DeadReason
from askq.core.job import JobState
from askq.core.redisserver import EmbeddedRedis
from askq.producers.client import Client
from askq.stack import Stack
from askq.workers.reaper import Reaper
from tests.conftest import FAST_ENV, Sim, wait_for, wait_workers

# The settings' own defaults, passed on because the stack fixture starts workers with FAST_ENV.
DEFAULT_LIVENESS = {
    f"ASKQ_{name.upper()}": str(Settings.model_fields[name].default)
    for name in ("lease_s", "heartbeat_s", "reaper_interval_s")
}


def _holder(stack: Stack, r: redis.Redis, job_id: str) -> subprocess.Popen[bytes]:
    """The worker process running a job, from the job hash's worker field (host:pid)."""
    worker = wait_for(lambda: r.hget(keys.job(job_id), "worker"), 30, what="job claimed")
    pid = int(str(worker).rsplit(":", 1)[1])
    return next(p for p in stack.workers if p.pid == pid)


def _writes(r: redis.Redis, job_id: str) -> int:
    return int(r.hget(keys.job(job_id), "result_writes") or 0)


def test_kill9_mid_job_is_finished_elsewhere_within_30s_with_defaults(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    for _ in range(2):
        stack.start_worker(concurrency=4, **DEFAULT_LIVENESS)
    wait_workers(r, 2)
    # The primary hangs for the first seconds (from now: workers may take long to start on a
    # loaded machine), so the first run is still going when it is killed.
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": "hang", "window": [0, 6]}]}}})
    client = Client(settings)
    job_id = client.submit("My parcel never arrived, what now?")
    victim = _holder(stack, r, job_id)
    killed_at = time.monotonic()
    stack.kill_worker(victim, signal.SIGKILL)
    view = client.wait(job_id, timeout=30 - (time.monotonic() - killed_at))
    assert view.state is JobState.SUCCEEDED
    assert view.delivery == 2
    assert _writes(r, job_id) == 1
    assert int(str(r.hget(keys.job(job_id), "worker")).rsplit(":", 1)[1]) != victim.pid


def test_frozen_worker_resumes_after_its_job_moved_on_and_writes_nothing(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    for _ in range(2):
        stack.start_worker(concurrency=4)
    wait_workers(r, 2)
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": "hang", "window": [0, 4]}]}}})
    client = Client(settings)
    job_id = client.submit("Can I return a gift without the receipt?")
    frozen = _holder(stack, r, job_id)
    frozen.send_signal(signal.SIGSTOP)
    try:
        view = client.wait(job_id, timeout=40)
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert view.state is JobState.SUCCEEDED
    stored = r.hget(keys.job(job_id), "result")
    # The resumed worker finishes its stale run (lease lost) and goes back to idle.
    worker_key = next(w for w in r.zrange(keys.WORKERS, 0, -1) if str(w).endswith(f":{frozen.pid}"))
    wait_for(lambda: r.hget(keys.worker(str(worker_key)), "inflight") == "0"
             and float(r.hget(keys.worker(str(worker_key)), "heartbeat") or 0) > time.time() - 2,
             40, what="resumed worker idle")
    assert frozen.poll() is None
    assert _writes(r, job_id) == 1
    assert r.hget(keys.job(job_id), "result") == stored


def test_job_that_kills_its_worker_is_poison_after_three_deliveries(
    stack: Stack, r: redis.Redis, settings: Settings
) -> None:
    stack.start_worker(concurrency=2, ASKQ_CHAOS_HOOKS="true")
    wait_workers(r, 1)
    client = Client(settings)
    job_id = client.submit("Please crash [[askq:crash]]")

    def dead_or_restart() -> bool:
        if all(p.poll() is not None for p in stack.workers):
            stack.start_worker(concurrency=2, ASKQ_CHAOS_HOOKS="true")
        return client.get(job_id).state is JobState.DEAD

    wait_for(dead_or_restart, 60, interval=0.2, what="poisoned job")
    view = client.get(job_id)
    assert view.reason is DeadReason.POISON
    assert view.delivery == 3
    assert sum(1 for p in stack.workers if p.poll() is not None) == 3
    record = client.dead_letter(job_id)
    assert record.deliveries == 3
    assert record.payload is not None and record.payload["id"] == job_id
    assert _writes(r, job_id) == 0


def test_same_key_from_eight_threads_is_one_job_and_one_execution(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    client = Client(settings)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def submit() -> None:
        barrier.wait()
        ids.append(client.submit("Do you ship to Norway?", idempotency_key="ticket-8"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Four more producers, as separate processes.
    procs = [subprocess.Popen([sys.executable, "-m", "askq", "submit", "--key", "ticket-8", "Do you ship to Norway?"],
                              env=stack.env(), stdout=subprocess.PIPE, text=True) for _ in range(4)]
    ids += [p.communicate(timeout=60)[0].strip() for p in procs]
    assert len(ids) == 12 and len(set(ids)) == 1
    assert r.llen(settings.queue) == 1
    stack.start_worker(concurrency=4)
    assert client.wait(ids[0], timeout=30).state is JobState.SUCCEEDED
    assert sim.requests("primary") == 1
    assert _writes(r, ids[0]) == 1


def test_reserved_but_unclaimed_message_of_a_dead_worker_is_restored_fast(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    client = Client(settings)
    job_id = client.submit("Is there a warranty on refurbished phones?")
    # What kombu leaves behind when a worker dies holding a prefetched message: the entry is
    # off the queue list and in `unacked`, delivered a while ago, and the job was never claimed.
    entry = r.rpop(settings.queue)
    assert entry is not None
    tag = json.loads(entry)["properties"]["delivery_tag"]
    r.hset(keys.KOMBU_UNACKED, tag, json.dumps([json.loads(entry), "", settings.queue]))
    r.zadd(keys.KOMBU_UNACKED_INDEX, {tag: time.time() - settings.lease_s - 1})
    assert Reaper(r, settings).sweep()["restored"] == 1
    assert not r.hexists(keys.KOMBU_UNACKED, tag)
    assert r.llen(settings.queue) == 1
    assert message.locate(json.dumps([json.loads(str(r.lindex(settings.queue, 0))), "", ""])) == (job_id, 2)
    # A second sweep finds nothing to do: the restore happens once.
    assert Reaper(r, settings).sweep()["restored"] == 0
    stack.start_worker(concurrency=2)
    view = client.wait(job_id, timeout=30)
    assert view.state is JobState.SUCCEEDED and view.delivery == 1
    assert sim.requests("primary") == 1


def test_stale_unacked_entry_of_a_job_that_moved_on_is_dropped(settings: Settings, r: redis.Redis) -> None:
    client = Client(settings)
    job_id = client.submit("What are your opening hours?")
    entry = json.loads(str(r.rpop(settings.queue)))
    r.hset(keys.job(job_id), "dispatch", 2)  # the job was re-enqueued since this message
    tag = entry["properties"]["delivery_tag"]
    r.hset(keys.KOMBU_UNACKED, tag, json.dumps([entry, "", settings.queue]))
    r.zadd(keys.KOMBU_UNACKED_INDEX, {tag: time.time() - settings.lease_s - 1})
    assert Reaper(r, settings).sweep()["dropped"] == 1
    assert r.llen(settings.queue) == 0 and not r.hexists(keys.KOMBU_UNACKED, tag)


def test_reaper_never_poisons_a_fresh_claim(settings: Settings, r: redis.Redis) -> None:
    client = Client(settings)
    job_id = client.submit("Why was I charged twice?")
    now = time.time()
    # Running, at the delivery cap, but its lease is live (a worker just claimed or renewed it).
    r.hset(keys.job(job_id), mapping={"state": "running", "delivery": settings.max_deliveries,
                                      "lease": "t", "lease_until": now + 30})
    r.zadd(keys.LEASES, {job_id: now - 1})  # the reaper's index still shows the old expiry
    assert Reaper(r, settings).sweep()["poisoned"] == 0
    assert client.get(job_id).state is JobState.RUNNING
    # Killing it against a dispatch the reaper did not see changes nothing either.
    r.hset(keys.job(job_id), "lease_until", now - 1)
    outcome = Reaper(r, settings).dlq.kill(job_id, DeadReason.POISON, "x", expect_state="running", expect_dispatch=7)
    assert outcome == "changed"
    assert client.get(job_id).state is JobState.RUNNING


def test_redis_restart_mid_run_all_jobs_terminal_and_workers_resume(
    sim_stack: Stack, sim: Sim, tmp_path: Path, settings: Settings
) -> None:
    server = EmbeddedRedis(tmp_path / "own-redis").start()
    stack = Stack(tmp_path / "restart-stack", redis_url=server.url, env=dict(FAST_ENV))
    stack.sim_url = sim.url
    try:
        sim.configure({"latency_s": 0.4})
        for _ in range(2):
            stack.start_worker(concurrency=10)
        own = settings.model_copy(update={"redis_url": None})
        client = Client(own, redis.Redis.from_url(server.url, decode_responses=True))
        wait_workers(client.redis, 2)
        ids = client.submit_many([{"question": f"Restart question {i}?"} for i in range(40)])
        wait_for(lambda: client.redis.hget(keys.STATS, "succeeded"), 30, what="first results")
        server.restart()
        ids += client.submit_many([{"question": f"After restart {i}?"} for i in range(10)])
        states = wait_for(lambda: _all_terminal(client, ids), 60, interval=0.5, what="all jobs terminal")
        assert states == {"succeeded": len(ids)}
        writes = [int(client.redis.hget(keys.job(i), "result_writes") or 0) for i in ids]
        assert writes == [1] * len(ids)
        assert all(p.poll() is None for p in stack.workers)
    finally:
        stack.stop()
        server.stop()


def _all_terminal(client: Client, ids: list[str]) -> dict[str, int] | None:
    try:
        views = client.store.get_many(ids)
    except redis.ConnectionError:
        return None
    counts: dict[str, Any] = {}
    for v in views.values():
        state = v.state.value if v is not None else "missing"
        counts[state] = counts.get(state, 0) + 1
    return counts if set(counts) <= {"succeeded", "dead"} else None


def test_queued_job_whose_message_was_lost_in_flight_is_resent(settings: Settings, r: redis.Redis) -> None:
    client = Client(settings)
    vanished = client.submit("Can I get an invoice copy?")
    waiting = client.submit("Why is my order late?")
    past = time.time() - 3 * settings.lease_s
    for job_id in (vanished, waiting):
        r.hset(keys.job(job_id), "updated", past)
        r.zadd(keys.PENDING, {job_id: past})
    # A worker popped the message (BRPOP) and died before kombu recorded it as unacked.
    popped = r.rpop(settings.queue)
    assert popped is not None and message.locate(json.dumps([json.loads(popped), "", ""])) == (vanished, 1)
    assert Reaper(r, settings).sweep()["resent"] == 1
    assert r.hget(keys.job(vanished), "dispatch") == "2" and r.hget(keys.job(waiting), "dispatch") == "1"
    assert r.llen(settings.queue) == 2
    # Nothing else is missing now: a second sweep re-sends nothing.
    for job_id in (vanished,):
        r.hset(keys.job(job_id), "updated", past)
    assert Reaper(r, settings).sweep()["resent"] == 0
