"""The worker's trimmed hot path keeps its promises: scripts, bookkeeping, task events for Flower."""

from __future__ import annotations

import threading
from typing import Any

import redis

from askq.config.settings import Settings
from askq.core import keys
from askq.core.job import JobState
from askq.producers.client import Client
from askq.stack import Stack
from askq.workers.celeryapp import create_app
from tests.conftest import Sim, wait_for, wait_workers


def test_jobs_finish_once_after_redis_forgot_its_scripts(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    # Claim, result write and breaker record go on pipelines by EVALSHA; after SCRIPT FLUSH (as
    # after a Redis restart) each must still run exactly once, and the bookkeeping still land.
    sim.configure({"latency_s": 0.02})
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    client = Client(settings)
    first = client.wait(client.submit("Where is my parcel?"), timeout=30)
    assert first.state is JobState.SUCCEEDED
    r.script_flush()
    ids = [client.submit(f"Flushed scripts, question {i}?") for i in range(5)]
    views = [client.wait(job_id, timeout=30) for job_id in ids]
    assert [v.state for v in views] == [JobState.SUCCEEDED] * 5
    assert all(v.result is not None and v.result.source == "primary" for v in views)
    assert [int(r.hget(keys.job(job_id), "result_writes") or 0) for job_id in ids] == [1] * 5
    assert sim.requests("primary") == 6
    # The success bookkeeping rode on the result writes: the breaker counted every call...
    window = r.hgetall(keys.breaker_window("primary"))
    assert sum(int(v) for k, v in window.items() if k.endswith(":ok")) == 6
    # ...and the cache was filled, so the same question asked again is answered from it.
    again = client.wait(client.submit("flushed scripts, QUESTION 3?"), timeout=30)
    assert again.result is not None and again.result.source == "cache"
    assert sim.requests("primary") == 6
    client.close()


def test_task_events_are_off_until_flower_turns_them_on(stack: Stack, r: redis.Redis, settings: Settings,
                                                        sim: Sim) -> None:
    # Flower broadcasts `enable_events` while it runs; the worker default sends no task events
    # until then, and sends them once asked.
    sim.configure({"latency_s": 0.02})
    proc = stack.start_worker(concurrency=2, name="events")
    wait_workers(r, 1)
    app = create_app(settings)
    replies = wait_for(lambda: app.control.enable_events(reply=True, timeout=2.0), timeout=30,
                       what="a reply to enable_events")
    assert [next(iter(x.values())) for x in replies] == [{"ok": "task events enabled"}]
    seen: list[dict[str, Any]] = []
    with app.connection() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": seen.append})

        def stop_on_success(event: dict[str, Any]) -> None:
            seen.append(event)
            receiver.should_stop = True

        receiver.handlers["task-succeeded"] = stop_on_success
        listener = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=40), daemon=True)
        listener.start()
        client = Client(settings)
        asked = iter(range(100))

        def answered_and_seen() -> bool:
            # Submitted until one lands after the listener's queue exists (it binds asynchronously).
            job_id = client.submit(f"Do you ship to Norway, parcel {next(asked)}?")
            assert client.wait(job_id, timeout=30).state is JobState.SUCCEEDED
            return any(e.get("type") == "task-succeeded" for e in seen)

        wait_for(answered_and_seen, timeout=40, interval=0.5, what="a task-succeeded event")
        listener.join(timeout=30)
        client.close()
    assert any(e.get("type") == "task-succeeded" for e in seen)
    again = app.control.enable_events(reply=True, timeout=2.0)
    assert [next(iter(x.values())) for x in again] == [{"ok": "task events already enabled"}]
    stack.kill_worker(proc, 15)
