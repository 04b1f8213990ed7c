"""Circuit breaker per provider, shared by every worker through Redis.

closed: calls flow, outcomes are counted in per-second buckets over `window_s`; once at
least `min_requests` calls were seen and the failure rate reaches `failure_rate`, it opens.
open: the tier is skipped at once until `cooldown_s` has passed.
half-open: exactly one caller in the whole cluster gets the probe (decided inside a Lua
script, so two workers can never both probe); success closes, failure reopens. A probe that
never reports (its worker died) is handed to the next caller after `probe_timeout_s`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aredis

from askq.config.settings import BreakerSettings
from askq.core import clock, keys, scripts
from askq.core.scripts import QueuedScript, ScriptCall


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

    async def permit(self, provider: str, known_state: str | None = None) -> Permit:
        """May this caller call the provider? known_state="closed" (read just now) saves the round trip."""
        if known_state == "closed":
            return Permit.CALL
        s = self.settings
        outcome = await self._allow(
            keys=[keys.breaker(provider), keys.STATS],
            args=[await clock.aread(self.redis), s.cooldown_s, s.probe_timeout_s, provider],
        )
        return Permit(outcome)

    def _record_args(self, provider: str, ok: bool, permit: Permit) -> tuple[list[str], list[Any]]:
        s = self.settings
        return (
            [keys.breaker(provider), keys.breaker_window(provider), keys.STATS],
            [clock.now(), int(ok), int(permit is Permit.PROBE), s.window_s, s.min_requests, s.failure_rate,
             provider],
        )

    def record_call(self, provider: str, ok: bool, permit: Permit) -> ScriptCall:
        """record() as a value, to queue on a pipeline; read its reply with recorded()."""
        return self._record.call(*self._record_args(provider, ok, permit))

    async def record(self, provider: str, ok: bool, permit: Permit) -> Recorded:
        """Count one call's outcome (a probe's decides the half-open breaker)."""
        return recorded(await self.record_call(provider, ok, permit).run())

    async def release(self, provider: str) -> None:
        """Hand back a probe that never reached the provider, so the next caller probes at once."""
        await self._release(keys=[keys.breaker(provider)])

    async def state(self, provider: str) -> str:
        return str(await self.redis.hget(keys.breaker(provider), "state") or "closed")


def recorded(reply: Any) -> Recorded:
    """A record's reply: the state after it, and whether this outcome changed it."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return Recorded(state=text.rstrip("!"), changed=text.endswith("!"))
