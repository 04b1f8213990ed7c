"""A Celery consumer that dead-letters messages it cannot run instead of dropping them.

Relies on Celery 5.7's Consumer (celery/worker/consumer/consumer.py): `create_task_handler`
returns the per-message callback, and the strategy it calls (celery/worker/strategy.py,
Request.__init__) raises on a message of the wrong shape. Only InvalidTaskError,
ContentDisallowed and DecodeError are handled there; anything else propagates into the
consumer's event loop and stops the worker ("Unrecoverable error"), or, being a KeyError,
which kombu 5.7's Redis transport counts as a connection error, restarts the connection with
the message never acknowledged. askq's transport (askq/workers/transport.py) checks each entry
against the message contract before Celery sees it; the wrapper here is the last resort.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import redis
import structlog
from celery.worker.consumer.consumer import Consumer as CeleryConsumer

from askq.config.logging import scrub
from askq.core.deadletter import MAX_RAW_CHARS, DeadReason
from askq.workers.runtime import get_runtime

log = structlog.get_logger("askq.consumer")

# Failures of the broker connection itself: kombu must see these to reconnect. Deliberately
# not kombu's own list, which holds KeyError (kombu#2582): raised while handling one message,
# a KeyError is that message's fault.
BROKER_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)

_WRITE_TRIES = 4


def raw_text(entry: Any) -> str:
    """A queue entry (parsed envelope, kombu message or text) as bounded text for its record."""
    entry = getattr(entry, "_raw", entry)  # kombu's virtual Message keeps the envelope it came from
    if isinstance(entry, bytes):
        return entry[:MAX_RAW_CHARS].decode("utf-8", errors="replace")
    if isinstance(entry, str):
        return entry[:MAX_RAW_CHARS]
    try:
        return json.dumps(entry, default=repr)[:MAX_RAW_CHARS]
    except Exception:  # circular or unprintable: a record with less is better than none
        return f"<unprintable {type(entry).__name__}>"


def _kwargsrepr_job_id(headers: Any) -> str | None:
    repr_ = headers.get("kwargsrepr") if isinstance(headers, dict) else None
    try:
        job_id = json.loads(repr_)["job_id"] if isinstance(repr_, str) else None
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return job_id if isinstance(job_id, str) and job_id.isalnum() and len(job_id) <= 64 else None


def _body_job(envelope: Any) -> dict[str, Any] | None:
    """The job payload inside an envelope's body, if it has one (for the stored-payload check)."""
    try:
        body = json.loads(base64.b64decode(envelope["body"], validate=True))
        job = body[1]["job"]
    except Exception:  # any shape at all: there is simply no payload to keep
        return None
    return job if isinstance(job, dict) else None


def dead_letter_entry(entry: Any, error: str) -> None:
    """Record a queue entry askq will not run as an invalid_payload dead letter (never raises).

    `entry` is the parsed envelope or kombu's Message. The job it names is passed along so
    the dead-letter queue can tell a job's own stored payload (then the job itself is dead)
    from a forged or stray message (which never touches the job).
    """
    envelope = getattr(entry, "_raw", entry)
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    record_invalid(_kwargsrepr_job_id(headers), raw_text(entry), error, _body_job(envelope))


def dead_letter_raw(raw: str, error: str) -> None:
    """Record a queue entry that is not even a message envelope (never raises)."""
    record_invalid(None, raw[:MAX_RAW_CHARS], error, None)


def record_invalid(job_id: str | None, raw: str, error: str, payload: dict[str, Any] | None) -> None:
    """Write one invalid_payload dead letter; never raises (a failure is logged with the entry)."""
    # The entry is already off the queue: this record is all that is left of it, so a short
    # Redis outage is waited out. Bad data cannot make the write fail (DeadLetterQueue.kill).
    delay = 0.2
    for attempt in range(1, _WRITE_TRIES + 1):
        try:
            get_runtime().dlq.kill(job_id, DeadReason.INVALID_PAYLOAD, error, payload=payload, raw=raw)
            log.warning("message_dead_lettered", reason="invalid_payload", error=scrub(error)[:500])
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if attempt == _WRITE_TRIES:
                break
            log.warning("dead_letter_retry", error=str(exc), wait_s=delay)
            time.sleep(delay)
            delay *= 2
        except Exception:  # the consumer must keep serving whatever happened here
            break
    # The log line is then the only trace of the entry: it carries the entry (bounded, scrubbed).
    log.exception("dead_letter_failed", error=scrub(error)[:500], raw=scrub(raw)[:1000])


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with every refusal path writing a dead letter first."""

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
        dead_letter_entry(message, f"message could not be turned into a task: {type(exc).__name__}: {exc}")
        if not getattr(message, "acknowledged", False):
            message.ack_log_error(log, self.connection_errors)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        dead_letter_entry(message, f"undecodable message ({message.content_type}): {exc}")
        if not getattr(message, "acknowledged", False):
            message.ack_log_error(log, self.connection_errors)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        dead_letter_entry(message, "message is not a Celery task message")
        message.reject_log_error(log, self.connection_errors)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = getattr(message, "headers", None)
        name = headers.get("task") if isinstance(headers, dict) else None
        dead_letter_entry(message, f"unknown task name {name!r}")
        message.reject_log_error(log, self.connection_errors)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter_entry(message, f"invalid task message: {exc}")
        message.reject_log_error(log, self.connection_errors)
