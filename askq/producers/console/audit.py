"""The console's audit trail and its replay rate cap, both in Redis (keys.CONSOLE_AUDIT, keys.console_replays)."""

from __future__ import annotations

import time
from collections import Counter
from typing import cast

import redis
from pydantic import BaseModel

from askq.core import keys


class AuditEntry(BaseModel):
    """One console action: who (a token's fingerprint, never the token), what, when, to which ids."""

    at: float
    who: str
    action: str
    outcomes: dict[str, str]  # record id -> what happened to it
    question: str | None = None  # the edit applied (replay with edits)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(self.outcomes.values()))


def record(client: redis.Redis, max_entries: int, entry: AuditEntry) -> None:
    """Append an entry (newest first) and drop the oldest beyond max_entries, in one round trip."""
    pipe = client.pipeline(transaction=True)
    pipe.lpush(keys.CONSOLE_AUDIT, entry.model_dump_json())
    pipe.ltrim(keys.CONSOLE_AUDIT, 0, max_entries - 1)
    pipe.execute()


def recent(client: redis.Redis, limit: int = 100) -> list[AuditEntry]:
    """The newest entries first; an entry that cannot be read is shown as such, not skipped."""
    found = []
    for raw in cast(list[str], client.lrange(keys.CONSOLE_AUDIT, 0, limit - 1)):
        try:
            found.append(AuditEntry.model_validate_json(raw))
        except ValueError:
            found.append(AuditEntry(at=0, who="?", action="unreadable entry", outcomes={}))
    return found


def take_replays(client: redis.Redis, wanted: int, per_minute: int, now: float | None = None) -> int:
    """Reserve up to `wanted` replays in this minute's budget (shared by every API process); returns how many."""
    if wanted <= 0:
        return 0
    key = keys.console_replays(int((now or time.time()) // 60))
    pipe = client.pipeline(transaction=True)
    pipe.incrby(key, wanted)
    pipe.expire(key, 120)
    used = int(pipe.execute()[0])
    granted = max(0, min(wanted, per_minute - (used - wanted)))
    if granted < wanted:
        client.decrby(key, wanted - granted)  # give back what this action may not use
    return granted


def describe(entry: AuditEntry) -> str:
    """One line for the audit table: how many ids had each outcome."""
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(entry.counts.items())) or "nothing"

