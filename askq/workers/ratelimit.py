"""Requests- and tokens-per-minute limits per provider, shared by every worker through Redis.

Requests use a sliding one-minute log (a sorted set of request times), so N workers together
never exceed the limit in any 60 s window. Tokens use a per-minute counter, charged with an
estimate before the call and corrected with the usage the provider reported after it (in
the same round trip that records the success), so the budget tracks what was really spent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from askq.config.settings import ProviderSettings
from askq.core import clock, keys, scripts


@dataclass(frozen=True, slots=True)
class Grant:
    """An admitted call: the minute its estimated tokens were charged to, and how many."""

    minute: int
    tokens: int


class RateLimiter:
    """Admits calls to a provider within its shared limits, waiting briefly if a slot is near."""

    def __init__(self, client: aredis.Redis, max_wait_s: float) -> None:
        self.redis = client
        self.max_wait_s = max_wait_s
        self._acquire = scripts.register(client, "rate_acquire")

    async def acquire(self, provider: ProviderSettings, tokens: int) -> Grant | None:
        """A grant when the call may go ahead; None when it would have to wait longer than max_wait_s."""
        now = await clock.aread(self.redis)
        if provider.requests_per_minute is None and provider.tokens_per_minute is None:
            return Grant(int(now // 60), 0)
        deadline = time.monotonic() + self.max_wait_s
        while True:
            minute = int(now // 60)
            wait = float(
                await self._acquire(
                    keys=[keys.rate_requests(provider.name), keys.rate_tokens(provider.name, minute)],
                    args=[now, provider.requests_per_minute or 0, provider.tokens_per_minute or 0, tokens,
                          f"{now}:{uuid.uuid4().hex[:8]}"],
                )
            )
            if wait <= 0:
                return Grant(minute, tokens if provider.tokens_per_minute else 0)
            if time.monotonic() + wait > deadline:
                return None
            await asyncio.sleep(wait + 0.001)
            now = clock.now()

    @staticmethod
    def usage_fix(provider: ProviderSettings, grant: Grant, used: int) -> UsageFix | None:
        """The correction from the estimate charged up front to the tokens really used (None: nothing to fix)."""
        if provider.tokens_per_minute is None or grant.tokens == used:
            return None
        return UsageFix(keys.rate_tokens(provider.name, grant.minute), used - grant.tokens)


@dataclass(frozen=True, slots=True)
class UsageFix:
    """A token-count correction for one minute's counter, queued on a pipeline."""

    key: str
    delta: int

    def queue(self, pipe: Any) -> None:
        pipe.incrby(self.key, self.delta)
        pipe.expire(self.key, 120)  # the charge may have expired meanwhile: never leave a key without TTL
