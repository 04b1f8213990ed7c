"""Where the broker's refusals go: every queue entry askq will not run becomes an
invalid_payload dead letter, never acknowledged into nothing.

askq/broker/ checks entries and knows kombu and Celery; this module binds its abstract
`refuse` hooks to the dead-letter queue (through the worker's runtime), and the transport's
`admit` to the job check (askq/workers/admitted.py), so a job is checked once per delivery. The Celery app names
these two classes (askq/workers/celeryapp.py).
"""

from __future__ import annotations

import time
from typing import Any

import redis
import structlog

from askq.broker import consumer, transport
from askq.broker.envelope import Envelope, named_job, raw_text
from askq.config.logging import scrub
from askq.core import clock
from askq.core.deadletter import MAX_RAW_CHARS, DeadReason
from askq.workers import admitted
from askq.workers.runtime import get_runtime

log = structlog.get_logger("askq.consumer")

_WRITE_TRIES = 4


def refuse(entry: Any, error: str) -> None:
    """Record a queue entry (parsed envelope, kombu message or text) as an invalid_payload dead
    letter, passing along the job it names and its payload (never raises)."""
    job_id, payload = named_job(entry)
    record_invalid(job_id, raw_text(entry, MAX_RAW_CHARS), error, payload)


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


class Transport(transport.Transport):
    """askq's kombu transport, refusing into the dead-letter queue."""

    def now(self) -> float:
        # Redis's clock: the reaper judges the unacked stamps on it, whatever this host's says.
        return clock.now()

    def refuse(self, entry: Any, error: str) -> None:
        refuse(entry, error)

    def admit(self, envelope: Envelope) -> None:
        admitted.admit(envelope)


class Consumer(consumer.Consumer):
    """askq's Celery consumer, refusing into the dead-letter queue."""

    def refuse(self, message: Any, error: str) -> None:
        refuse(message, error)
