"""Bounded retries for one tier (tenacity): full-jitter backoff, Retry-After honoured, a sleep budget.

A wait the tier cannot afford (a long Retry-After, or backoff past the budget) stops the
retries so the ladder moves to the next tier instead of holding a worker slot asleep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from config.settings import RetryPolicy
from core.errors import RateLimitedError, TransientProviderError

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class _Wait:
    """Full-jitter exponential backoff, or the provider's Retry-After when it gave one."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        ceiling = min(self.policy.cap_s, self.policy.base_s * 2 ** (state.attempt_number - 1))
        return self.rng.uniform(0, ceiling)


class _Stop:
    """Stop after max_attempts, or when the next wait would overrun the tier's sleep budget."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.slept = 0.0

    def __call__(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.policy.max_attempts:
            return True
        upcoming = state.upcoming_sleep
        if self.slept + upcoming > self.policy.budget_s:
            return True
        self.slept += upcoming
        return False


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    on_retry: Callable[[BaseException, float], None],
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run call() under the policy; transient errors are retried, anything else is raised at once."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            on_retry(exc, state.upcoming_sleep)

    retrying = AsyncRetrying(
        stop=_Stop(policy),
        wait=_Wait(policy, rng or random.Random()),
        retry=retry_if_exception_type(TransientProviderError),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(call)
