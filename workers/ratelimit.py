"""Requests- and tokens-per-minute limits per provider, shared by every worker through Redis.

Requests use a sliding one-minute log (a sorted set of request times), so N workers together
never exceed the limit in any 60 s window. Tokens use a per-minute counter, charged with the
estimate before the call.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aredis

from config.settings import ProviderSettings
from core import keys

# KEYS: requests zset, tokens counter   ARGV: now, rpm (0 = none), tpm (0 = none), tokens, member
# Returns 0 when admitted, else seconds until a slot frees up.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return tostring(tonumber(oldest[2]) + 60 - now)
  end
end
if tpm > 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used + tokens > tpm and used > 0 then return tostring(60 - (now % 60)) end
  redis.call('INCRBY', KEYS[2], tokens)
  redis.call('EXPIRE', KEYS[2], 120)
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('EXPIRE', KEYS[1], 120)
end
return '0'
"""


class RateLimiter:
    """Admits calls to a provider within its shared limits, waiting briefly if a slot is near."""

    def __init__(self, client: aredis.Redis, max_wait_s: float) -> None:
        self.redis = client
        self.max_wait_s = max_wait_s
        self._acquire = client.register_script(_ACQUIRE)

    async def acquire(self, provider: ProviderSettings, tokens: int) -> bool:
        """True when the call may go ahead; False when it would have to wait longer than max_wait_s."""
        if provider.requests_per_minute is None and provider.tokens_per_minute is None:
            return True
        deadline = time.monotonic() + self.max_wait_s
        while True:
            now = time.time()
            wait = float(
                await self._acquire(
                    keys=[keys.rate_requests(provider.name), keys.rate_tokens(provider.name, int(now // 60))],
                    args=[now, provider.requests_per_minute or 0, provider.tokens_per_minute or 0, tokens,
                          f"{now}:{uuid.uuid4().hex[:8]}"],
                )
            )
            if wait <= 0:
                return True
            if time.monotonic() + wait > deadline:
                return False
            await asyncio.sleep(wait + 0.001)
