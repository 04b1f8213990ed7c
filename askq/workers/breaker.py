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
from askq.core import clock, keys
from askq.workers.queuedscript import QueuedScript, ScriptCall

# KEYS: breaker, stats   ARGV: now, cooldown, probe_timeout, provider
_ALLOW = """
local st = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_until')
local state = st[1] or 'closed'
local now = tonumber(ARGV[1])
if state == 'closed' then return 'closed' end
if state == 'open' and now - tonumber(st[2] or '0') < tonumber(ARGV[2]) then return 'open' end
if state == 'half_open' and now < tonumber(st[3] or '0') then return 'open' end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[2], 'breaker_probes:' .. ARGV[4], 1)
return 'probe'
"""

# KEYS: breaker, window, stats   ARGV: now, ok, was_probe, window_s, min_requests, failure_rate, provider
_RECORD = """
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[3] == '1' then
  if state ~= 'half_open' then return state end
  if ARGV[2] == '1' then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('DEL', KEYS[2])
    redis.call('HINCRBY', KEYS[3], 'breaker_closed:' .. ARGV[7], 1)
    return 'closed!'
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  redis.call('HINCRBY', KEYS[3], 'breaker_opened:' .. ARGV[7], 1)
  return 'open!'
end
if state ~= 'closed' then return state end
local sec = math.floor(now)
redis.call('HINCRBY', KEYS[2], sec .. (ARGV[2] == '1' and ':ok' or ':fail'), 1)
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[4])) + 1)
if ARGV[2] == '1' then return 'closed' end
local oldest = sec - tonumber(ARGV[4])
local flat = redis.call('HGETALL', KEYS[2])
local ok, fail = 0, 0
for i = 1, #flat, 2 do
  local field = flat[i]
  local at = tonumber(string.match(field, '^(%d+)'))
  if at <= oldest then
    redis.call('HDEL', KEYS[2], field)
  elseif string.sub(field, -3) == ':ok' then
    ok = ok + tonumber(flat[i + 1])
  else
    fail = fail + tonumber(flat[i + 1])
  end
end
local total = ok + fail
if total >= tonumber(ARGV[5]) and fail / total >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  redis.call('HINCRBY', KEYS[3], 'breaker_opened:' .. ARGV[7], 1)
  return 'open!'
end
return 'closed'
"""

# KEYS: breaker   A probe that never reached the provider: the next caller may probe at once.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
  redis.call('HSET', KEYS[1], 'probe_until', 0)
  return 1
end
return 0
"""


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
        self._allow = client.register_script(_ALLOW)
        self._record = QueuedScript(client, _RECORD)
        self._release = client.register_script(_RELEASE)

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
