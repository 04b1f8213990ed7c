"""The Celery application: JSON only, late acks, one message at a time per slot, thread pool.

Importing this module starts nothing and reads no settings: the app's configuration is a
promise (`add_defaults` with a callable) that Celery resolves the first time something reads
`app.conf` — when `askq worker`, `celery -A askq.workers worker` or Flower starts, not at import.
Only then is the Redis URL resolved, which may start the embedded Redis.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from askq.broker.envelope import TASK_NAME
from askq.config.settings import Settings, load_settings
from askq.core.connection import redis_url


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's configuration for these settings (broker, pool, reliability switches)."""
    return {
        "broker_url": redis_url(settings),
        # Only JSON crosses the wire: pickle (or anything else) is refused before decoding.
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "result_accept_content": ["json"],
        # The job store holds answers; Celery's result backend is not used.
        "task_ignore_result": True,
        "result_backend": None,
        # Ack after the job ran; a worker lost mid-job leaves its message to be redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # LLM calls are slow I/O: threads park on the shared event loop (see askq/workers/runtime.py).
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        "worker_consumer": "askq.workers.refusals:Consumer",
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        # Kombu's Redis transport, plus dead-lettering of queue entries it cannot parse.
        "broker_transport": "askq.workers.refusals:Transport",
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        # structlog writes its own lines; Celery must not wrap them as WARNING/MainProcess.
        "worker_redirect_stdouts": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def create_app(settings: Settings | None = None) -> Celery:
    """The Celery app; without settings they are read when its configuration is first needed."""
    app = Celery("askq", include=["askq.workers.tasks", "askq.workers.signals"])
    if settings is not None:
        app.conf.update(celery_config(settings))
    else:
        app.add_defaults(lambda: celery_config(load_settings()))
    return app


app = create_app()
