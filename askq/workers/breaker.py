"""Circuit breaker per provider, shared by every worker through Redis.

closed: calls flow, outcomes are counted in per-second buckets over `window_s`; once at
least `min_requests` calls were seen and the failure rate reaches `failure_rate`, it opens.
open: the tier is skipped at once until `cooldown_s` has passed.
half-open: exactly one caller in the whole cluster gets the probe (decided inside a Lua
script, so two workers can never both probe); success closes, failure reopens. A probe that
never reports (its worker died) is handed to the next caller after `probe_timeout_s`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aredis

from askq.config.settings import BreakerSettings
from askq.core import keys, scripts
from askq.core.scripts import QueuedScript


class Permit(StrEnum):
    """What the breaker lets a caller do."""

    CALL = "closed"  # breaker closed: call normally
    PROBE = "probe"  # the single half-open probe: call once, and report the outcome
    SKIP = "open"  # breaker open: skip this tier


@dataclass(frozen=True, slots=True)
class Recorded:
    """The breaker state after a recorded outcome, and whether this outcome changed it."""

    state: str
    changed: bool


class Breaker:
    """Shared circuit breakers for all providers; the Redis state is the only state."""

    def __init__(self, client: aredis.Redis, settings: BreakerSettings) -> None:
        self.redis = client
        self.settings = settings
        self._allow = scripts.register(client, "breaker_allow")
        self._record = QueuedScript(client, "breaker_record")
        self._release = scripts.register(client, "breaker_release")

    def queue_state(self, pipe: Any, provider: str) -> None:
        """Queue a read of the provider's state on a pipeline (no side effects, unlike permit)."""
        pipe.hget(keys.breaker(provider), "state")

    async def permit(self, provider: str, known_state: str | None = None) -> Permit:
        """May this caller call the provider? known_state="closed" (read just now) saves the round trip."""
        if known_state == "closed":
            return Permit.CALL
        s = self.settings
        outcome = await self._allow(
            keys=[keys.breaker(provider), keys.STATS],
            args=[time.time(), s.cooldown_s, s.probe_timeout_s, provider],
        )
        return Permit(outcome)

    def _record_args(self, provider: str, ok: bool, permit: Permit) -> tuple[list[str], list[Any]]:
        s = self.settings
        return (
            [keys.breaker(provider), keys.breaker_window(provider), keys.STATS],
            [time.time(), int(ok), int(permit is Permit.PROBE), s.window_s, s.min_requests, s.failure_rate,
             provider],
        )

    async def record(self, provider: str, ok: bool, permit: Permit) -> Recorded:
        """Count one call's outcome (a probe's decides the half-open breaker)."""
        keys_, args = self._record_args(provider, ok, permit)
        return _recorded(await self._record(keys_, args))

    def queue_record(self, pipe: Any, provider: str, ok: bool, permit: Permit) -> None:
        """Queue record() on a pipeline; settle_queued reads its reply."""
        self._record.queue(pipe, *self._record_args(provider, ok, permit))

    async def settle_queued(self, reply: Any, provider: str, ok: bool, permit: Permit) -> Recorded:
        """The outcome of a queued record; runs it again if Redis had not loaded the script yet."""
        return _recorded(await self._record.reply(reply, *self._record_args(provider, ok, permit)))

    async def release(self, provider: str) -> None:
        """Hand back a probe that never reached the provider, so the next caller probes at once."""
        await self._release(keys=[keys.breaker(provider)])

    async def state(self, provider: str) -> str:
        return str(await self.redis.hget(keys.breaker(provider), "state") or "closed")


def _recorded(reply: Any) -> Recorded:
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return Recorded(state=text.rstrip("!"), changed=text.endswith("!"))
