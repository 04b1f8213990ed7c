"""The designs askq is measured against: two real Celery apps (`celery -A ... worker`) and a floor.

textbook: prefork pool, concurrency = cores, a plain task running a LangChain chain synchronously.
bare: the thread pool askq uses, a task calling the openai SDK directly, no bookkeeping at all.
floor: no Celery, no LangChain, one asyncio loop (`floor.py`, `python -m askq.bench.baselines.floor`).

Both take the message askq's producers build (kwargs `job`, `dispatch`) under their own task
name, and append one timing record per job to a Redis list so the bench reads them like askq's.
Their broker, simulator and queue come from BENCH_* environment variables the bench sets.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

# Each baseline consumes its own queue, so several can stay up while the bench interleaves them.
DONE_KEY = "bench:done"  # + ":<queue>": LIST of JSON timing records, one per finished baseline job
READY_KEY = "bench:ready"  # + ":<queue>": SET of pids of baseline workers that are consuming
SYSTEM = (
    "You are a helpful customer-service assistant. Answer the customer's question clearly and "
    "politely, using the context documents when they are relevant."
)

def done_key(queue: str) -> str:
    return f"{DONE_KEY}:{queue}"


def ready_key(queue: str) -> str:
    return f"{READY_KEY}:{queue}"


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} must be set (the bench sets it for baseline workers)")
    return value


def make_app(name: str) -> Celery:
    """A Celery app on the bench's Redis with Celery's usual defaults, JSON only, no result backend."""
    app = Celery(name, broker=env("BENCH_REDIS_URL"))
    app.conf.update(
        accept_content=["json"],
        task_serializer="json",
        task_ignore_result=True,
        task_default_queue=env("BENCH_QUEUE"),
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


_shared: dict[int, redis.Redis] = {}
_lock = threading.Lock()


def _redis() -> redis.Redis:
    # One client per pool process, made after the fork; redis-py's pool is thread-safe.
    with _lock:
        client = _shared.get(os.getpid())
        if client is None:
            client = _shared[os.getpid()] = redis.Redis.from_url(env("BENCH_REDIS_URL"))
    return client


def record(job: dict[str, Any], started: float, ok: bool) -> None:
    """Append the job's timings (created, started, finished) to the bench's list."""
    entry = {"id": job.get("id"), "created": job.get("created"), "started": started,
             "finished": time.time(), "ok": ok}
    _redis().rpush(done_key(env("BENCH_QUEUE")), json.dumps(entry))


@worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(**_: Any) -> None:
    _redis().sadd(ready_key(env("BENCH_QUEUE")), os.getpid())
