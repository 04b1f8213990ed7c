"""One worker process's runtime: an asyncio loop that keeps hundreds of LLM calls in flight.

Celery's thread pool hands each task to a thread; the thread submits the job's coroutine to
this process's single event loop and waits. All network I/O (LLM over HTTP, Redis) happens
on that loop, so a few hundred jobs in flight cost a few hundred parked threads and no more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aredis
import structlog

from askq.config.settings import Settings
from askq.core import clock
from askq.core.connection import connect, connect_async, redis_url
from askq.core.deadletterqueue import DeadLetterQueue
from askq.workers.breaker import Breaker
from askq.workers.cache import AnswerCache
from askq.workers.ladder import Ladder
from askq.workers.loopexecutor import LoopExecutor
from askq.workers.ratelimit import RateLimiter
from askq.workers.retry import Sleep
from askq.workers.transitions import JobTransitions

T = TypeVar("T")
log = structlog.get_logger("askq.runtime")

# Backoff between restarts of a background duty that died: first, and cap (seconds).
DUTY_RESTART_S = (0.5, 30.0)


@dataclass(eq=False)
class Run:
    """One run of a job in this process, under its own lease token.

    Everything per run is keyed by run, never by job id alone: a job reclaimed while this
    process still runs it can be delivered here again, and two runs of one job must not
    touch each other's entries.
    """

    job_id: str
    token: str
    started: float
    # Writing its outcome: that write ends the lease on purpose, so a lost lease is no news.
    finishing: bool = False
    # Its lease was found lost (logged once).
    lost: bool = False
    # Set by a delivery taking this run's lease back; the outcome write waits for it.
    adopting: asyncio.Future[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The task walking the ladder (its provider calls): cancelled when the job is.
    task: asyncio.Task[Any] | None = None
    # The job was cancelled: this run stops and writes nothing.
    cancelled: bool = False

    def cancel(self) -> bool:
        """Stop this run's provider calls now (the open HTTP request is closed); False if it is
        already writing its outcome (which the job's cancelled state refuses) or was stopped."""
        if self.cancelled or self.finishing:
            return False
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()
        return True


# How long a cancel heard for a job with no run here is remembered: its claim may have been
# answered before the cancel and its run not started yet (the two replies race on two
# connections). Cancels are published only for running jobs, so this holds few entries.
RECENT_CANCEL_S = 30.0


class Runtime:
    """Everything a worker process shares between its jobs; built once, after the fork."""

    def __init__(self, settings: Settings, sleep: Sleep = asyncio.sleep) -> None:
        """sleep: the ladder's backoff sleep (tests record the waits instead)."""
        self.settings = settings
        self.url = redis_url(settings)
        # Celery's node name, as Flower shows it (askq/broker/nodename.py); host:pid outside a worker.
        self.name = _worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.started = time.time()
        self.sync_redis = connect(settings, self.url)
        self.dlq = DeadLetterQueue(self.sync_redis, settings)
        # (job id, lease token) -> run, for every run in this process now (touched on the loop only).
        self.runs: dict[tuple[str, str], Run] = {}
        # job id -> when a cancel was heard for it with no run here (see RECENT_CANCEL_S).
        self.recent_cancels: dict[str, float] = {}
        self.completed = 0
        self.last_progress = time.time()
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(LoopExecutor(thread_name_prefix="askq-loop-exec"))
        self._thread = threading.Thread(target=self._run_loop, name="askq-loop", daemon=True)
        self._thread.start()
        self.redis: aredis.Redis = self.call(self._connect())
        self.jobs = JobTransitions(self.redis, settings)
        self.ladder = Ladder(
            settings,
            Breaker(self.redis, settings.breaker),
            RateLimiter(self.redis, settings.rate_limit_wait_s),
            AnswerCache(self.redis, settings.cache_ttl_s, settings.prompt_version),
            sleep=sleep,
        )

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _connect(self) -> aredis.Redis:
        return connect_async(self.settings, self.url, max_connections=max(64, self.settings.worker_concurrency))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop from a pool thread and wait for its result.

        Past timeout the coroutine is cancelled (not left running behind the caller's back) and
        TimeoutError raised.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def spawn(self, name: str, duty: Callable[[], Coroutine[Any, Any, Any]], stop: asyncio.Event) -> None:
        """Run a background duty (heartbeat, lease renewal) on the loop until stop is set.

        A duty that dies (any exception) is logged and started again with backoff: a worker
        whose heartbeat silently stopped would keep working while its leases lapse and its
        jobs are re-run elsewhere.
        """
        asyncio.run_coroutine_threadsafe(supervise(name, duty, stop), self.loop)

    def start_run(self, job_id: str, token: str) -> Run:
        run = Run(job_id, token, clock.now())
        self.runs[(job_id, token)] = run
        # A cancel heard between its claim and now (see RECENT_CANCEL_S), used once and only while
        # fresh: a later job under the same id (its idempotency key reused) is not touched.
        heard = self.recent_cancels.pop(job_id, None)
        if heard is not None and time.monotonic() - heard < RECENT_CANCEL_S:
            run.cancelled = True  # never starts its calls
        return run

    def cancel_job(self, job_id: str) -> int:
        """Stop every run of job_id in this process (on the loop); returns how many were stopped.

        With none here, the cancel is remembered for a while, for a run about to start.
        """
        runs = [run for run in self.runs.values() if run.job_id == job_id]
        if not runs:
            now = time.monotonic()
            self.recent_cancels = {j: t for j, t in self.recent_cancels.items() if now - t < RECENT_CANCEL_S}
            self.recent_cancels[job_id] = now
        return sum(run.cancel() for run in runs)

    def end_run(self, run: Run) -> None:
        # Only this run's own entry: a newer run of the same job keeps its lease renewed.
        if self.runs.get((run.job_id, run.token)) is run:
            del self.runs[(run.job_id, run.token)]
        run.done.set()
        self.completed += 1
        self.last_progress = clock.now()

    def live_run(self, job_id: str) -> Run | None:
        """The newest run of job_id in this process, if one is going."""
        found = [r for r in self.runs.values() if r.job_id == job_id]
        return max(found, key=lambda r: r.started) if found else None

    def close(self) -> None:
        if self.loop.is_running():
            self.call(self.ladder.aclose(), timeout=5)
            self.call(self.redis.aclose(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.sync_redis.close()


async def supervise(name: str, duty: Callable[[], Coroutine[Any, Any, Any]], stop: asyncio.Event) -> None:
    """Keep a duty running until stop is set: log each death, restart with capped backoff."""
    delay = DUTY_RESTART_S[0]
    while not stop.is_set():
        started = time.monotonic()
        try:
            await duty()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("duty_failed", duty=name, error=repr(exc), restart_in_s=delay, exc_info=True)
        else:
            if stop.is_set():
                return
            log.error("duty_returned", duty=name, restart_in_s=delay)
        if time.monotonic() - started > DUTY_RESTART_S[1]:
            delay = DUTY_RESTART_S[0]  # it ran a good while: not a crash loop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, DUTY_RESTART_S[1])
        if not stop.is_set():
            log.warning("duty_restarted", duty=name)


_runtime: Runtime | None = None
_lock = threading.Lock()


_worker_name: str | None = None


def name_worker(name: str) -> None:
    """Name this process's runtime (before it is built): the Celery node name, set as Celery sets up."""
    global _worker_name
    _worker_name = name
    if _runtime is not None:
        _runtime.name = name


def get_runtime(settings: Settings | None = None) -> Runtime:
    """This process's runtime, created on first use (after Celery forks, never before)."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                from askq.config.settings import load_settings

                _runtime = Runtime(settings or load_settings())
    return _runtime
