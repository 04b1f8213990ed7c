"""A Celery consumer that dead-letters messages it cannot run instead of dropping them."""

from __future__ import annotations

import json
from typing import Any

import structlog
from celery.worker.consumer.consumer import Consumer as CeleryConsumer

from core.job import DeadReason
from workers.runtime import get_runtime

log = structlog.get_logger("askq.consumer")


def _raw(message: Any) -> str:
    body = getattr(message, "body", b"")
    if isinstance(body, bytes):
        return body[:4000].decode("utf-8", errors="replace")
    return str(body)[:4000]


def _job_id(message: Any) -> str | None:
    headers = getattr(message, "headers", None) or {}
    repr_ = headers.get("kwargsrepr") if isinstance(headers, dict) else None
    try:
        job_id = json.loads(repr_)["job_id"] if repr_ else None
    except (ValueError, TypeError, KeyError):
        return None
    return job_id if isinstance(job_id, str) and job_id.isalnum() else None


def dead_letter_message(message: Any, error: str) -> None:
    """Record an unrunnable message as an invalid_payload dead letter (never raises)."""
    _dead_letter(_job_id(message), _raw(message), error)


def dead_letter_raw(raw: str, error: str) -> None:
    """Record a queue entry that is not even a message envelope (never raises)."""
    _dead_letter(None, raw[:4000], error)


def _dead_letter(job_id: str | None, raw: str, error: str) -> None:
    try:
        get_runtime().dlq.kill(job_id, DeadReason.INVALID_PAYLOAD, error, raw=raw)
        log.warning("message_dead_lettered", reason="invalid_payload", error=error)
    except Exception:  # the consumer must keep serving whatever happened here
        log.exception("dead_letter_failed", error=error)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with every refusal path writing a dead letter first."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        dead_letter_message(message, f"undecodable message ({message.content_type}): {exc}")
        message.ack()

    def on_unknown_message(self, body: Any, message: Any) -> None:
        dead_letter_message(message, "message is not a Celery task message")
        message.reject_log_error(log, self.connection_errors)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (getattr(message, "headers", None) or {}).get("task")
        dead_letter_message(message, f"unknown task name {name!r}")
        message.reject_log_error(log, self.connection_errors)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter_message(message, f"invalid task message: {exc}")
        message.reject_log_error(log, self.connection_errors)
