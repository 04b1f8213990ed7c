"""The fallback ladder: provider tiers in order, then the answer cache, then the default answer.

Per job the happy path costs two Redis round trips: one pipeline reads the cache (fast
path) and the first tier's breaker state; one pipeline records the success in the breaker,
fills the cache and corrects the token estimate. Rate limits add one round trip per call
when a provider has them; retries, fallbacks and half-open probes add their own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import structlog

from config.settings import Settings
from core.errors import ContextTooLongError, ProviderError, RateLimitedError, TierSkippedError
from core.job import JobSpec, TokenUsage
from workers.breaker import Breaker, Permit
from workers.cache import AnswerCache, CachedAnswer
from workers.chain import Answer, Chain, prompt_chars
from workers.errorclass import caller_fault, classify, provider_fault
from workers.ratelimit import Grant, RateLimiter
from workers.retry import ONE_TRY, Sleep, stop_reason, with_retries

log = structlog.get_logger("askq.ladder")

# answered: a tier answered (provider, cache or default); permanent: every tier refused the
# request itself (dead-letter it); exhausted: providers failed and on_exhausted="retry".
Outcome = Literal["answered", "permanent", "exhausted"]
# Tokens a completion is assumed to use before the provider reports the real figure.
COMPLETION_ESTIMATE = 256


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


@dataclass
class _TierRun:
    """One tier's progress through its attempts."""

    permit: Permit
    attempt: int = 0
    grant: Grant | None = None
    # The failed attempt whose log line waits for the retry decision (its wait).
    pending: dict[str, Any] | None = None


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
        self.redis = breaker.redis
        self.sleep = sleep
        self.chains = [Chain(p) for p in settings.providers]

    async def run(self, spec: JobSpec) -> LadderResult:
        result = LadderResult(outcome="exhausted")
        first_state, hit = await self._prefetch(spec)
        if hit is not None:
            result.counters["cache_hits"] += 1
            log.info("tier_answered", provider="cache", degraded=False, fast_path=True)
            return self._cached(result, hit, degraded=False)
        caller_only = True
        for index, chain in enumerate(self.chains):
            if index > 0:
                result.counters["fallbacks"] += 1
            try:
                answer, run = await self._tier(chain, spec, result, first_state if index == 0 else None)
            except ProviderError as exc:
                result.last_error = f"{chain.provider.name}: {exc}"
                caller_only = caller_only and caller_fault(exc)
                continue
            result.outcome, result.answer, result.source = "answered", answer, chain.provider.name
            try:
                await self._succeeded(chain, spec, answer, run)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Bookkeeping only: the answer is good and the result write rides out the outage.
                log.warning("success_bookkeeping_failed", provider=chain.provider.name, error=str(exc))
            return result
        if caller_only:
            result.outcome = "permanent"
            return result
        return await self._last_resort(spec, result)

    async def _prefetch(self, spec: JobSpec) -> tuple[str, CachedAnswer | None]:
        """One round trip: the fast-path cache lookup and the first tier's breaker state."""
        fast = self.settings.cache_enabled and self.settings.cache_fast_path
        pipe = self.redis.pipeline(transaction=False)
        if fast:
            self.cache.queue_get(pipe, spec)
        self.breaker.queue_state(pipe, self.chains[0].provider.name)
        replies = await pipe.execute()
        state = replies[-1]
        state = state.decode() if isinstance(state, bytes) else str(state or "closed")
        return state, self.cache.parse(replies[0]) if fast else None

    async def _succeeded(self, chain: Chain, spec: JobSpec, answer: Answer, run: _TierRun) -> None:
        """One round trip: breaker success, cache fill, token correction."""
        provider = chain.provider
        pipe = self.redis.pipeline(transaction=False)
        self.breaker.queue_record(pipe, provider.name, True, run.permit)
        if self.settings.cache_enabled:
            self.cache.queue_put(pipe, spec, answer.text, provider.name, answer.model)
        if run.grant is not None:
            self.limiter.queue_usage(pipe, provider, run.grant, answer.usage.total or run.grant.tokens)
        replies = await pipe.execute(raise_on_error=False)
        recorded = await self.breaker.settle_queued(replies[0], provider.name, True, run.permit)
        if recorded.changed:
            log.warning("breaker_closed", provider=provider.name)

    async def _last_resort(self, spec: JobSpec, result: LadderResult) -> LadderResult:
        """Cache tier, then the default answer (or a durable retry, when so configured)."""
        if self.settings.cache_enabled:
            result.counters["fallbacks"] += 1
            hit = await self.cache.get(spec)
            if hit is not None:
                result.counters["cache_hits"] += 1
                log.info("tier_answered", provider="cache", degraded=True)
                return self._cached(result, hit, degraded=True)
        if self.settings.on_exhausted == "retry":
            result.outcome = "exhausted"
            log.info("ladder_exhausted", error=result.last_error)
            return result
        result.counters["fallbacks"] += 1
        result.counters["default_answers"] += 1
        result.outcome, result.source, result.degraded = "answered", "default", True
        result.answer = Answer(self.settings.default_answer, model="", usage=TokenUsage(), latency_s=0.0)
        log.info("tier_answered", provider="default", degraded=True)
        return result

    @staticmethod
    def _cached(result: LadderResult, hit: CachedAnswer, degraded: bool) -> LadderResult:
        result.outcome, result.source, result.degraded = "answered", "cache", degraded
        result.answer = Answer(hit.answer, model=hit.model or "", usage=TokenUsage(), latency_s=0.0)
        return result

    async def _tier(
        self, chain: Chain, spec: JobSpec, result: LadderResult, known_state: str | None
    ) -> tuple[Answer, _TierRun]:
        """Ask one tier under its retry policy; raises ProviderError when it gave no answer."""
        provider = chain.provider
        name = provider.name
        chars = prompt_chars(spec, provider.prompt)
        if provider.max_context_chars is not None and chars > provider.max_context_chars:
            self._note(result, name, 0, "skipped", "context_too_long")
            raise ContextTooLongError(f"prompt of {chars} chars exceeds {provider.max_context_chars}", name)
        run = _TierRun(permit=await self.breaker.permit(name, known_state))
        if run.permit is Permit.SKIP:
            self._note(result, name, 0, "skipped", "breaker_open")
            raise TierSkippedError("circuit breaker open", name)
        # The half-open probe is a single request: it is never retried.
        policy = provider.retry if run.permit is Permit.CALL else ONE_TRY

        def on_retry(exc: BaseException, wait_s: float) -> None:
            result.counters[f"retries:{name}"] += 1
            if run.pending is not None:
                run.pending["wait_s"] = round(wait_s, 3)
                _log_attempt(run.pending)
                run.pending = None

        async def attempt() -> Answer:
            return await self._attempt(chain, spec, result, run, chars)

        try:
            answer = await with_retries(attempt, policy, on_retry, sleep=self.sleep)
        except TierSkippedError:
            if run.permit is Permit.PROBE:  # the probe never reached the provider: hand it on
                await self.breaker.release(name)
            raise
        except ProviderError as err:
            if run.pending is not None:
                run.pending["moved_on"] = stop_reason(err, policy, run.attempt)
                _log_attempt(run.pending)
            raise
        return answer, run

    async def _attempt(self, chain: Chain, spec: JobSpec, result: LadderResult, run: _TierRun, chars: int) -> Answer:
        """One request to the provider (after breaker and rate-limit admission)."""
        provider = chain.provider
        name = provider.name
        run.attempt += 1
        if run.attempt > 1:
            # Another worker may have opened the breaker while we backed off.
            run.permit = await self.breaker.permit(name)
            if run.permit is Permit.SKIP:
                self._note(result, name, run.attempt, "skipped", "breaker_open")
                raise TierSkippedError("circuit breaker open", name)
        run.grant = await self.limiter.acquire(provider, tokens=chars // 4 + COMPLETION_ESTIMATE)
        if run.grant is None:
            self._note(result, name, run.attempt, "skipped", "rate_limit")
            raise TierSkippedError("provider rate limit reached", name)
        result.counters[f"attempts:{name}"] += 1
        started = time.perf_counter()
        try:
            answer = await chain.ask(spec)
        except Exception as exc:
            err = classify(exc, name)
            run.pending = self._note(result, name, run.attempt, "failed", err.error_class,
                                     time.perf_counter() - started, err, log_now=False)
            recorded = await self.breaker.record(name, not provider_fault(err), run.permit)
            if run.permit is Permit.PROBE:
                run.permit = Permit.CALL  # reported: nothing left to hand back
            if recorded.changed:
                log.warning("breaker_" + ("opened" if recorded.state == "open" else recorded.state), provider=name)
            raise err from exc
        self._note(result, name, run.attempt, "ok", "", answer.latency_s)
        return answer

    @staticmethod
    def _note(
        result: LadderResult,
        provider: str,
        attempt: int,
        outcome: str,
        error_class: str,
        latency_s: float = 0.0,
        err: ProviderError | None = None,
        log_now: bool = True,
    ) -> dict[str, Any]:
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
            if isinstance(err, RateLimitedError) and err.retry_after_s is not None:
                entry["retry_after_s"] = err.retry_after_s
            result.counters[f"errors:{provider}:{error_class}"] += 1
        if outcome == "skipped":
            result.counters[f"skipped:{provider}:{error_class}"] += 1
        result.attempts.append(entry)
        if log_now:
            _log_attempt(entry)
        return entry


def _log_attempt(entry: dict[str, Any]) -> None:
    fields = {k: v for k, v in entry.items() if k not in ("at", "error")}
    log.info("attempt", **fields)
