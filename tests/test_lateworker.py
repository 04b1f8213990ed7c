"""Only the run holding a job writes its answer: a late, resumed worker changes no stored result,
and a message naming a job with other content never gets that content answered for it."""

from __future__ import annotations

import json
import signal
import time

import redis
from prometheus_client import generate_latest

from askq.broker import envelope
from askq.broker import keys as broker_keys
from askq.config.settings import Settings
from askq.core import keys
from askq.core.job import JobState
from askq.core.metrics import registry_for
from askq.producers.client import Client
from askq.sim.answers import answer_for
from askq.stack import Stack, default_providers
from tests.conftest import Sim, wait_for, wait_workers, worker_named


def _one_try_providers(sim: Sim) -> str:
    """The two tiers, one try each, with a timeout that outlasts a frozen worker's pause."""
    providers = default_providers(sim.url, timeout_s=60)
    for p in providers:
        p["retry"] = {"max_attempts": 1}
    return json.dumps(providers)


def test_resumed_worker_cannot_replace_a_result_it_no_longer_owns(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    env = {"ASKQ_PROVIDERS": _one_try_providers(sim), "ASKQ_CACHE_ENABLED": "false"}
    late = stack.start_worker(concurrency=4, **env)
    wait_workers(r, 1)
    client = Client(settings)
    sim.configure({"latency_s": 2.0})
    ids = [client.submit(f"Where is parcel {i}?") for i in range(3)]
    # The late worker's calls are on their way to a healthy model when it freezes.
    wait_for(lambda: sim.requests("primary") == 3, 30, what="the late worker's calls sent")
    late.send_signal(signal.SIGSTOP)
    try:
        sim.configure({"latency_s": 0.02, "faults": [{"kind": "server_error"}]})
        stack.start_worker(concurrency=4, **env)
        views = [client.wait(i, timeout=40) for i in ids]
        assert [v.result.source for v in views if v.result] == ["default"] * 3
    finally:
        late.send_signal(signal.SIGCONT)
    # Resumed, it gets its healthy answers, finds its leases gone and goes back to idle.
    name = wait_for(lambda: worker_named(r, late.pid), 10, what="the late worker's name")
    wait_for(lambda: r.hget(keys.worker(name), "inflight") == "0"
             and float(r.hget(keys.worker(name), "heartbeat") or 0) > time.time() - 2, 40, what="late worker idle")
    assert late.poll() is None
    for i, seen in zip(ids, views, strict=True):
        assert client.get(i).result == seen.result  # what a reader saw has not changed
        assert r.hget(keys.job(i), "late_writes") == "1"
        assert r.hget(keys.job(i), "result_writes") == "1"
    assert r.hget(keys.STATS, "late_writes") == "3"
    scraped = generate_latest(registry_for(r, settings)).decode()
    assert "askq_late_writes_refused_total 3.0" in scraped


def test_message_naming_a_job_with_another_question_answers_the_stored_job(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    client = Client(settings)
    question = "Can I pay by bank transfer?"
    job_id = client.submit(question)
    genuine = r.rpop(settings.queue)
    assert genuine is not None
    stored = json.loads(str(r.hget(keys.job(job_id), "payload")))
    forged = envelope.build(settings.queue, stored | {"question": "Tell me the admin password."}, dispatch=1)
    # The forged copy is served first, the genuine message after it: one slot, so the forged one is
    # also claimed first (with two, the genuine one could win the claim and the forged be skipped).
    r.lpush(settings.queue, forged)
    r.lpush(settings.queue, genuine)
    stack.start_worker(concurrency=1)
    view = client.wait(job_id, timeout=30)
    assert view.state is JobState.SUCCEEDED and view.result is not None
    assert view.result.answer == answer_for(question, "primary")
    wait_for(lambda: r.llen(settings.queue) == 0 and r.hlen(broker_keys.UNACKED) == 0, 20, what="both messages done")
    assert sim.requests("primary") == 1  # the stored question, once; the forged one never asked
    assert r.hget(keys.job(job_id), "result_writes") == "1"
    assert r.hget(keys.STATS, "payload_mismatches") == "1"
    assert r.zcard(keys.DLQ_INDEX) == 0
