"""The dead-letter filter of the console: reason, provider, error text, time range and metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from askq.core.deadletter import DeadLetter, DeadReason
from askq.core.job import metadata_matches

MAX_FIELD_CHARS = 200  # of any filter field: longer is refused with a message, not scanned


@dataclass(frozen=True)
class Filter:
    """What an operator asked for; every field empty means every dead letter."""

    reason: DeadReason | None = None
    provider: str = ""
    error: str = ""
    since: float | None = None
    until: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def matches(self, record: DeadLetter) -> bool:
        if self.reason is not None and record.reason is not self.reason:
            return False
        if self.since is not None and record.dead_at < self.since:
            return False
        if self.until is not None and record.dead_at > self.until:
            return False
        if self.error and self.error.casefold() not in record.error.casefold():
            return False
        if self.provider and not any(isinstance(h, dict) and h.get("provider") == self.provider
                                     for h in record.history):
            return False
        if self.metadata:
            found = (record.payload or {}).get("metadata")
            return isinstance(found, dict) and metadata_matches(found, self.metadata)
        return True


def _time(name: str, text: str, problems: list[str]) -> float | None:
    """A datetime-local value (YYYY-MM-DDTHH:MM[:SS]) read as UTC, as the page says."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        problems.append(f"{name}: expected a time like 2026-01-31T13:45 (UTC), got {text[:40]!r}")
        return None


def _metadata(text: str, problems: list[str]) -> dict[str, Any]:
    """`key=value` pairs separated by commas; a value that reads as JSON (7, true, null) is that."""
    found: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            problems.append(f"metadata: expected key=value, got {pair[:40]!r}")
            continue
        try:
            parsed = json.loads(value)
            found[key.strip()] = parsed if isinstance(parsed, int | float | bool) or parsed is None else value
        except ValueError:
            found[key.strip()] = value.strip()
    return found


def parse(params: dict[str, str]) -> tuple[Filter, list[str]]:
    """A Filter from the page's form fields, and what was wrong with them (those are left out)."""
    problems: list[str] = []
    for name, value in params.items():
        if len(value) > MAX_FIELD_CHARS:
            problems.append(f"{name}: {len(value)} characters, at most {MAX_FIELD_CHARS}")
    if problems:
        return Filter(), problems
    reason = None
    if params.get("reason"):
        try:
            reason = DeadReason(params["reason"])
        except ValueError:
            problems.append(f"reason: not one of {', '.join(r.value for r in DeadReason)}")
    return Filter(
        reason=reason,
        provider=params.get("provider", "").strip(),
        error=params.get("error", "").strip(),
        since=_time("since", params.get("since", ""), problems),
        until=_time("until", params.get("until", ""), problems),
        metadata=_metadata(params.get("metadata", ""), problems),
    ), problems
