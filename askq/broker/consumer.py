"""A Celery consumer that refuses messages it cannot run instead of dropping them.

Relies on Celery 5.7's Consumer (celery/worker/consumer/consumer.py): `create_task_handler`
returns the per-message callback, and the strategy it calls (celery/worker/strategy.py,
Request.__init__) raises on a message of the wrong shape. Only InvalidTaskError,
ContentDisallowed and DecodeError are handled there; anything else propagates into the
consumer's event loop and stops the worker ("Unrecoverable error"), or, being a KeyError,
which kombu 5.7's Redis transport counts as a connection error, restarts the connection with
the message never acknowledged. askq's transport (askq/broker/transport.py) checks each entry
against the message format before Celery sees it; the wrapper here is the last resort.

Like the transport, it hands each refusal to `refuse` (bound by askq/workers/refusals.py).
"""

from __future__ import annotations

from typing import Any

import redis
import structlog
from celery.worker.consumer.consumer import Consumer as CeleryConsumer

log = structlog.get_logger("askq.consumer")

# Failures of the broker connection itself: kombu must see these to reconnect. Deliberately
# not kombu's own list, which holds KeyError (kombu#2582): raised while handling one message,
# a KeyError is that message's fault.
BROKER_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with every refusal path recording the message first. Abstract: `refuse`."""

    def refuse(self, message: Any, error: str) -> None:
        """Record a message that will not run; never raises."""
        raise NotImplementedError("askq.broker.consumer.Consumer.refuse: bind it (askq/workers/refusals.py)")

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> None:
            try:
                handle(message)
            except BROKER_ERRORS:
                raise
            except Exception as exc:
                # Whatever a message made Celery raise while turning it into a request, it is
                # that message's fault: record it and acknowledge it (late ack: it sits in
                # kombu's unacked hash, and would come back after the visibility timeout).
                self.on_unrunnable(message, exc)

        return on_task_received

    def on_unrunnable(self, message: Any, exc: Exception) -> None:
        self.refuse(message, f"message could not be turned into a task: {type(exc).__name__}: {exc}")
        if not getattr(message, "acknowledged", False):
            message.ack_log_error(log, self.connection_errors)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self.refuse(message, f"undecodable message ({message.content_type}): {exc}")
        if not getattr(message, "acknowledged", False):
            message.ack_log_error(log, self.connection_errors)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self.refuse(message, "message is not a Celery task message")
        message.reject_log_error(log, self.connection_errors)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = getattr(message, "headers", None)
        name = headers.get("task") if isinstance(headers, dict) else None
        self.refuse(message, f"unknown task name {name!r}")
        message.reject_log_error(log, self.connection_errors)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self.refuse(message, f"invalid task message: {exc}")
        message.reject_log_error(log, self.connection_errors)
