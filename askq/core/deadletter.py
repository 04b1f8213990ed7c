"""Dead letters: why a job died (DeadReason) and the record an operator reads (DeadLetter).

The records are built here, so that bad data (the reason most dead letters exist) cannot break
them; askq/core/deadletterqueue.py keeps them in Redis, lists, replays and purges them. Kept apart
because the job contract (askq/core/job.py: a job's view says why it died) imports the reasons,
while the queue imports the job contract to replay a job.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from askq.config.logging import scrub


class DeadReason(StrEnum):
    """Why a job was dead-lettered."""

    POISON = "poison"
    PERMANENT_ERROR = "permanent_error"
    EXHAUSTED = "exhausted"
    INVALID_PAYLOAD = "invalid_payload"
    # askq's own code or the job's own data failed (e.g. text that cannot be encoded into a
    # request): not a provider's fault, so no breaker counted it and no tier retried it.
    INTERNAL_ERROR = "internal_error"
    # Not the job's death: its completion callback could not be delivered (the job itself is
    # terminal and keeps its outcome). Replay re-delivers the callback, not the job.
    CALLBACK_FAILED = "callback_failed"


MAX_RAW_CHARS = 4000  # of a refused message kept in its record
MAX_ERROR_CHARS = 2000


class DeadLetter(BaseModel):
    """What an operator needs to decide about a dead job."""

    model_config = ConfigDict(extra="forbid")

    id: str
    job_id: str | None
    reason: DeadReason
    error: str
    payload: dict[str, Any] | None = None
    raw: str | None = None  # the undecodable message text, for invalid payloads (truncated)
    history: list[dict[str, Any]] = []
    deliveries: int = 0
    created: float | None = None
    dead_at: float


def callback_record(event_id: str, job_id: str, error: str, url: str, attempts: int, first: float,
                    now: float) -> str:
    """The dead letter of a callback given up on, as JSON: its id is the event's (the webhook-id)."""
    payload = {"webhook_id": event_id, "callback_url": url, "created": first}
    return make_record(event_id, job_id, DeadReason.CALLBACK_FAILED, error, payload, None, None, attempts, now)[1]


def make_record(
    record_id: str, job_id: str | None, reason: DeadReason, error: Any, payload: dict[str, Any] | None,
    raw: Any, history: list[dict[str, Any]] | None, deliveries: int, now: float,
) -> tuple[DeadLetter, str]:
    """The record and its JSON, whatever the data: what cannot be stored as given is kept as text.

    Dead letters are where bad data ends up, so this must not fail on it (issue 9 A): a payload
    with a lone surrogate, a `created` that is no number, a raw text of megabytes.
    """
    error_text = _bounded(error, MAX_ERROR_CHARS)
    raw_text = None if raw is None else _bounded(raw, MAX_RAW_CHARS)
    try:
        record = DeadLetter(id=record_id, job_id=job_id, reason=reason, error=error_text, payload=payload,
                            raw=raw_text, history=history or [], deliveries=deliveries,
                            created=_created(payload), dead_at=now)
        return record, record.model_dump_json()
    except Exception as exc:  # any data pydantic cannot hold or write out
        why = f"{type(exc).__name__}: {_safe(str(exc))[:200]}"
    kept = [raw_text or ""]
    if payload is not None:
        kept.append(f"payload: {_as_text(payload)}")
    if history:
        kept.append(f"history: {_as_text(history)}")
    record = DeadLetter(
        id=record_id, job_id=_safe(job_id) if job_id is not None else None, reason=reason,
        error=_bounded(f"{error_text} [record kept as text: {why}]", MAX_ERROR_CHARS),
        raw=_bounded("\n".join(k for k in kept if k), MAX_RAW_CHARS),
        deliveries=deliveries if isinstance(deliveries, int) else 0, dead_at=now,
    )
    return record, record.model_dump_json()


def _safe(text: str) -> str:
    """Text that encodes as UTF-8 anywhere: a lone surrogate becomes its \\uXXXX escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _bounded(value: Any, limit: int) -> str:
    # Scrubbed after a first cut (secrets may shorten it), so megabytes are never scanned whole.
    text = value if isinstance(value, str) else _as_text(value)
    return scrub(_safe(text[: limit * 4]))[:limit]


def _as_text(value: Any) -> str:
    try:
        return json.dumps(value, default=repr)[: MAX_RAW_CHARS * 4]
    except Exception:  # circular, or a repr that raises
        try:
            return repr(value)[: MAX_RAW_CHARS * 4]
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def _created(payload: Any) -> float | None:
    value = payload.get("created") if isinstance(payload, dict) else None
    if value is None or isinstance(value, bool):
        return None
    try:
        created = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return created if math.isfinite(created) else None
