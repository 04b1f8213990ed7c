"""What happens around every worker process: logging, heartbeats, lease renewal, the reaper."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from celery.signals import celeryd_init, setup_logging, worker_ready, worker_shutdown

from askq.broker import private
from askq.broker.nodename import unique_nodename
from askq.config.logging import configure_logging, scrub
from askq.workers import callbacks, cancels, heartbeat, reachability, reaper
from askq.workers.runtime import get_runtime, name_worker

log = structlog.get_logger("askq.worker")
_stop_thread = threading.Event()
_stop_loop: asyncio.Event | None = None


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _name(instance: Any, **_: Any) -> None:
    # One name for this process in Flower, `askq workers` and the metrics: Celery's node name.
    name_worker(unique_nodename(instance))


@setup_logging.connect  # type: ignore[untyped-decorator]
def _logging(loglevel: Any = None, **_: Any) -> None:
    """A receiver here stops Celery configuring logging itself: its lines go through askq's."""
    from celery.apps import worker as celery_worker

    from askq.config.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    # Celery's own loggers keep the worker's --loglevel (warning by default: no line per task).
    logging.getLogger("celery").setLevel(loglevel or logging.WARNING)
    if settings.log_json:
        # Celery 5 writes "worker: Warm shutdown (MainProcess)" and its other signal-handler
        # notices straight to the stdout file descriptor (celery.apps.worker.safe_say, looked up
        # when called); with JSON logs they are events too. tests/test_logs.py stops a worker.
        celery_worker.safe_say = _say


def _say(msg: str, *_: Any) -> None:
    # Called inside signal handlers: one os.write of a finished line, no lock a logger might hold.
    event = {"message": scrub(msg.strip()), "event": "celery_notice", "level": "warning",
             "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    with contextlib.suppress(OSError):
        os.write(2, (json.dumps(event) + "\n").encode())


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start(**_: Any) -> None:
    global _stop_loop
    rt = get_runtime()

    async def make_event() -> asyncio.Event:
        return asyncio.Event()

    stop_loop = _stop_loop = rt.call(make_event())
    rt.spawn("heartbeat", lambda: heartbeat.run(rt, stop_loop), stop_loop)
    # On the loop beside the jobs: a receiver that hangs holds a socket, never a slot or a thread.
    rt.spawn("callbacks", lambda: callbacks.run(rt.redis, rt.settings, rt.dlq, stop_loop), stop_loop)
    rt.spawn("cancels", lambda: cancels.listen(rt, stop_loop), stop_loop)

    def renew_own_leases() -> None:
        # Bounded: a sweep is skipped (and retried next interval) rather than made to wait.
        try:
            rt.call(heartbeat.renew_leases(rt), timeout=rt.settings.lease_s)
        except concurrent.futures.TimeoutError:
            raise redis.TimeoutError("renewing this process's own leases took longer than a lease") from None

    reaper.run_in_thread(rt.sync_redis, rt.settings, rt.name, _stop_thread, renew_own_leases)
    changed = private.drift()
    if changed:
        # kombu or Celery installed outside the pins (pyproject.toml): askq's overrides may be wrong.
        log.error("broker_internals_changed", changed=changed)
    log.info("worker_started", worker=rt.name, concurrency=rt.settings.worker_concurrency, queue=rt.settings.queue)
    reachability.check_in_background(rt.settings)


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop(**_: Any) -> None:
    rt = get_runtime()
    _stop_thread.set()
    if _stop_loop is not None:
        rt.loop.call_soon_threadsafe(_stop_loop.set)
    try:
        rt.call(heartbeat.retire(rt), timeout=5)
    except Exception:  # shutting down: Redis may already be gone
        log.warning("retire_failed")
    log.info("worker_stopped", worker=rt.name)
