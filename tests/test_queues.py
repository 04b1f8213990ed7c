"""Several queues on one Redis: a job always goes back to the queue it was submitted to."""

from __future__ import annotations

import signal
import time

import redis

from askq.broker import envelope
from askq.config.settings import Settings
from askq.core import keys
from askq.core.job import JobState
from askq.producers.client import Client
from askq.stack import Stack
from askq.workers.reaper import Reaper
from tests.conftest import Sim, wait_for, wait_workers, worker_named


def _queued_on(r: redis.Redis, queue: str) -> list[tuple[str, int]]:
    import json

    return [found for raw in r.lrange(queue, 0, -1) if (found := envelope.locate_envelope(json.loads(raw)))]


def test_lost_message_sweep_resends_to_the_jobs_own_queue(settings: Settings, r: redis.Redis) -> None:
    other = Client(settings.model_copy(update={"queue": "other"}))
    job_id = other.submit("Can I change my delivery address?")
    assert r.hget(keys.job(job_id), "queue") == "other"
    reaper = Reaper(r, settings)  # a reaper of the default queue
    later = time.time() + 10 * settings.lease_s
    # The message waits on its own queue: nothing is lost, nothing is sent to the reaper's queue.
    assert reaper.resend_lost(later) == 0
    assert r.llen(settings.queue) == 0 and _queued_on(r, "other") == [(job_id, 1)]
    r.delete("other")  # now the message is really lost
    assert reaper.resend_lost(later) == 1
    assert r.llen(settings.queue) == 0
    assert _queued_on(r, "other") == [(job_id, 2)]


def test_reclaimed_job_goes_back_to_its_queue_not_the_reapers(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    # Calls hang until the job is reclaimed; later ones answer. Only the default-queue worker survives
    # the kill, so its reaper is the one that reclaims the job of queue "other". (A fault window in
    # seconds could end before a slow worker on a loaded machine made its first call.)
    sim.configure({"latency_s": 0.02, "faults": [{"kind": "hang", "hang_s": 30}]})
    default = stack.start_worker(concurrency=4)
    first = stack.start_worker(concurrency=4, ASKQ_QUEUE="other")
    wait_workers(r, 2)
    client = Client(settings.model_copy(update={"queue": "other"}))
    job_id = client.submit("Why was I charged twice?")
    wait_for(lambda: r.hget(keys.job(job_id), "worker") == f"{_host(r, first.pid)}", 30, what="job running on 'other'")
    stack.kill_worker(first, signal.SIGKILL)
    wait_for(lambda: r.hget(keys.job(job_id), "delivery") == "2", 60, what="job reclaimed")
    sim.configure({"latency_s": 0.02, "faults": []})
    time.sleep(1.0)  # a default-queue worker given the job would have claimed it by now
    assert client.get(job_id).state is JobState.QUEUED
    assert _queued_on(r, "other") == [(job_id, int(r.hget(keys.job(job_id), "dispatch") or 0))]
    assert r.llen(settings.queue) == 0
    second = stack.start_worker(concurrency=4, ASKQ_QUEUE="other")
    view = client.wait(job_id, timeout=45)
    assert view.state is JobState.SUCCEEDED
    assert r.hget(keys.job(job_id), "worker") == _host(r, second.pid)
    assert default.poll() is None


def _host(r: redis.Redis, pid: int) -> str:
    """The worker name a worker process publishes."""
    return worker_named(r, pid) or f"?:{pid}"
