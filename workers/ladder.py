"""The fallback ladder: provider tiers in order, then the answer cache, then the default answer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from config.settings import RetryPolicy, Settings
from core.errors import (
    ContextTooLongError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TierSkippedError,
)
from core.job import JobSpec, TokenUsage
from workers.breaker import Breaker, Permit
from workers.cache import AnswerCache
from workers.chain import Answer, Chain, prompt_chars
from workers.errorclass import classify
from workers.ratelimit import RateLimiter
from workers.retry import Sleep, with_retries

log = structlog.get_logger("askq.ladder")

Outcome = Literal["answered", "permanent", "exhausted"]


@dataclass
class LadderResult:
    """What the ladder produced for one job, with the trail it took."""

    outcome: Outcome
    answer: Answer | None = None
    source: str = ""
    degraded: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    last_error: str = ""


class Ladder:
    """Walks the configured tiers for a job; one instance per worker process."""

    def __init__(
        self,
        settings: Settings,
        breaker: Breaker,
        limiter: RateLimiter,
        cache: AnswerCache,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.breaker = breaker
        self.limiter = limiter
        self.cache = cache
        self.sleep = sleep
        self.chains = [Chain(p) for p in settings.providers]

    async def run(self, spec: JobSpec) -> LadderResult:
        result = LadderResult(outcome="exhausted")
        if self.settings.cache_enabled and self.settings.cache_fast_path:
            hit = await self.cache.get(spec)
            if hit is not None:
                result.counters["cache_hits"] += 1
                return self._cached(result, hit.answer, hit.model, degraded=False)
        permanent_only = True
        for index, chain in enumerate(self.chains):
            if index > 0:
                result.counters["fallbacks"] += 1
            try:
                answer = await self._tier(chain, spec, result)
            except ProviderError as exc:
                result.last_error = f"{chain.provider.name}: {exc}"
                if not isinstance(exc, PermanentProviderError) or isinstance(exc, ContextTooLongError):
                    permanent_only = False
                continue
            result.outcome, result.answer, result.source = "answered", answer, chain.provider.name
            if self.settings.cache_enabled:
                await self.cache.put(spec, answer.text, chain.provider.name, answer.model)
            return result
        if permanent_only:
            result.outcome = "permanent"
            return result
        return await self._last_resort(spec, result)

    async def _last_resort(self, spec: JobSpec, result: LadderResult) -> LadderResult:
        """Cache tier, then the default answer (or a durable retry, when so configured)."""
        if self.settings.cache_enabled:
            result.counters["fallbacks"] += 1
            hit = await self.cache.get(spec)
            if hit is not None:
                result.counters["cache_hits"] += 1
                log.info("tier_answered", provider="cache", degraded=True)
                return self._cached(result, hit.answer, hit.model, degraded=True)
        if self.settings.on_exhausted == "retry":
            result.outcome = "exhausted"
            return result
        result.counters["fallbacks"] += 1
        result.outcome, result.source, result.degraded = "answered", "default", True
        result.answer = Answer(self.settings.default_answer, model="", usage=TokenUsage(), latency_s=0.0)
        log.info("tier_answered", provider="default", degraded=True)
        return result

    @staticmethod
    def _cached(result: LadderResult, text: str, model: str | None, degraded: bool) -> LadderResult:
        result.outcome, result.source, result.degraded = "answered", "cache", degraded
        result.answer = Answer(text, model=model or "", usage=TokenUsage(), latency_s=0.0)
        return result

    async def _tier(self, chain: Chain, spec: JobSpec, result: LadderResult) -> Answer:
        provider = chain.provider
        name = provider.name
        chars = prompt_chars(spec, provider.prompt)
        if provider.max_context_chars is not None and chars > provider.max_context_chars:
            self._note(result, name, 0, "skipped", "context_too_long", 0.0)
            raise ContextTooLongError(f"prompt of {chars} chars exceeds {provider.max_context_chars}", name)
        permit = await self.breaker.permit(name)
        if permit is Permit.SKIP:
            self._note(result, name, 0, "skipped", "breaker_open", 0.0)
            raise TierSkippedError("circuit breaker open", name)
        attempt = 0

        async def call() -> Answer:
            nonlocal attempt, permit
            attempt += 1
            if attempt > 1:
                # Another worker may have opened the breaker while we backed off.
                permit = await self.breaker.permit(name)
                if permit is Permit.SKIP:
                    self._note(result, name, attempt, "skipped", "breaker_open", 0.0)
                    raise TierSkippedError("circuit breaker open", name)
            if not await self.limiter.acquire(provider, tokens=chars // 4 + 256):
                self._note(result, name, attempt, "skipped", "rate_limit", 0.0)
                raise TierSkippedError("provider rate limit reached", name)
            result.counters[f"attempts:{name}"] += 1
            started = time.perf_counter()
            try:
                answer = await chain.ask(spec)
            except Exception as exc:
                err = classify(exc, name)
                self._note(result, name, attempt, "failed", err.error_class, time.perf_counter() - started, err)
                await self._report(name, permit, err)
                raise err from None
            self._note(result, name, attempt, "ok", "", answer.latency_s)
            await self.breaker.record(name, True, permit)
            return answer

        def on_retry(exc: BaseException, wait_s: float) -> None:
            result.counters[f"retries:{name}"] += 1
            result.attempts[-1]["wait_s"] = round(wait_s, 3)
            log.info("attempt_retry", provider=name, attempt=attempt, wait_s=round(wait_s, 3))

        # The half-open probe is a single request: it is never retried.
        policy = provider.retry if permit is Permit.CALL else RetryPolicy(max_attempts=1)
        try:
            return await with_retries(call, policy, on_retry, sleep=self.sleep)
        except TierSkippedError:
            if permit is Permit.PROBE:  # the probe never reached the provider: hand it on
                await self.breaker.record(name, False, permit)
            raise

    async def _report(self, name: str, permit: Permit, err: ProviderError) -> None:
        # Only provider trouble counts against its breaker; a bad request is the caller's problem.
        if isinstance(err, PermanentProviderError) and not isinstance(err, RateLimitedError):
            if permit is Permit.PROBE:
                await self.breaker.record(name, True, permit)
            return
        state = await self.breaker.record(name, False, permit)
        if state == "open":
            log.warning("breaker_open", provider=name)

    @staticmethod
    def _note(
        result: LadderResult,
        provider: str,
        attempt: int,
        outcome: str,
        error_class: str,
        latency_s: float,
        err: ProviderError | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "provider": provider,
            "attempt": attempt,
            "outcome": outcome,
            "error_class": error_class,
            "latency_s": round(latency_s, 4),
            "wait_s": 0.0,
            "at": round(time.time(), 3),
        }
        if err is not None:
            entry["status"] = err.status
            entry["error"] = str(err)[:300]
            result.counters[f"errors:{provider}:{error_class}"] += 1
        if outcome == "skipped":
            result.counters[f"skipped:{provider}:{error_class}"] += 1
        result.attempts.append(entry)
        log.info("attempt", provider=provider, attempt=attempt, outcome=outcome, error_class=error_class,
                 latency_s=entry["latency_s"])
