"""One worker process's runtime: an asyncio loop that keeps hundreds of LLM calls in flight.

Celery's thread pool hands each task to a thread; the thread submits the job's coroutine to
this process's single event loop and waits. All network I/O (LLM over HTTP, Redis) happens
on that loop, so a few hundred jobs in flight cost a few hundred parked threads and no more.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis.asyncio as aredis
import structlog

from config.settings import Settings
from core.connection import connect, connect_async, redis_url
from core.deadletter import DeadLetterQueue
from workers.breaker import Breaker
from workers.cache import AnswerCache
from workers.executor import LoopExecutor
from workers.jobstate import JobState
from workers.ladder import Ladder
from workers.ratelimit import RateLimiter

T = TypeVar("T")
log = structlog.get_logger("askq.runtime")


class Runtime:
    """Everything a worker process shares between its jobs; built once, after the fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = redis_url(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.started = time.time()
        self.sync_redis = connect(settings, self.url)
        self.dlq = DeadLetterQueue(self.sync_redis, settings)
        # job id -> lease token, for every job this process is running now.
        self.held: dict[str, str] = {}
        # job id -> time its current run started, to tell a stalled worker from a busy one.
        self.running_since: dict[str, float] = {}
        # Ids of held jobs whose result is being written: that write ends their lease on purpose.
        self.finishing: set[str] = set()
        self.completed = 0
        self.last_progress = time.time()
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(LoopExecutor(thread_name_prefix="askq-loop-exec"))
        self._thread = threading.Thread(target=self._run_loop, name="askq-loop", daemon=True)
        self._thread.start()
        self.redis: aredis.Redis = self.call(self._connect())
        self.jobs = JobState(self.redis, settings)
        self.ladder = Ladder(
            settings,
            Breaker(self.redis, settings.breaker),
            RateLimiter(self.redis, settings.rate_limit_wait_s),
            AnswerCache(self.redis, settings.cache_ttl_s, settings.prompt_version),
        )

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _connect(self) -> aredis.Redis:
        return connect_async(self.settings, self.url, max_connections=max(64, self.settings.worker_concurrency))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop from a pool thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start a background coroutine on the loop (heartbeat, lease renewal)."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        if self.loop.is_running():
            self.call(self.ladder.aclose(), timeout=5)
            self.call(self.redis.aclose(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.sync_redis.close()


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime(settings: Settings | None = None) -> Runtime:
    """This process's runtime, created on first use (after Celery forks, never before)."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                from config.settings import load_settings

                _runtime = Runtime(settings or load_settings())
    return _runtime
