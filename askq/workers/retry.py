"""Bounded retries for one tier (tenacity): full-jitter backoff, Retry-After honoured, a sleep budget.

A wait the tier cannot afford (a Retry-After longer than the budget, or backoff that would
take the tier's total sleep past it) stops the retries without sleeping, so the ladder moves
on to the next tier instead of holding a worker slot asleep. Sleep is injected so tests
record the waits rather than sleep through them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from askq.config.settings import RetryPolicy
from askq.errors import RateLimitedError, TransientProviderError

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

# A single try: for the half-open probe, which must be exactly one request.
ONE_TRY = RetryPolicy(max_attempts=1, base_s=0.0, cap_s=0.0, budget_s=0.0)


class _Wait:
    """Full-jitter exponential backoff, or the provider's Retry-After (plus a little jitter)."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
            # Never sooner than asked; the jitter keeps every worker from retrying in the same ms.
            return exc.retry_after_s + self.rng.uniform(0, self.policy.base_s)
        ceiling = min(self.policy.cap_s, self.policy.base_s * 2 ** (state.attempt_number - 1))
        return self.rng.uniform(0, ceiling)


class _Stop:
    """Stop after max_attempts, or when the next wait would take the tier's sleep past its budget."""

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
    """Run call() under the policy; transient errors are retried, anything else is raised at once.

    The first try runs bare: most calls succeed, and tenacity's bookkeeping costs more CPU than
    the call itself on that path. Only a transient failure enters the tenacity loop, which
    replays that failure as its first attempt, so waits, budget and callbacks are the same as
    if tenacity had run the first try itself.
    """
    try:
        return await call()
    except TransientProviderError as exc:
        first: BaseException | None = exc

    async def resumed() -> T:
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return await call()

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
    return await retrying(resumed)


def stop_reason(err: BaseException, policy: RetryPolicy, attempts: int) -> str:
    """Why the tier gave up after its last failed attempt (for the attempt log)."""
    if not isinstance(err, TransientProviderError):
        return "not_retryable"
    if attempts >= policy.max_attempts:
        return "attempts_exhausted"
    if isinstance(err, RateLimitedError) and (err.retry_after_s or 0.0) > policy.budget_s:
        return "retry_after_over_budget"
    return "over_budget"
