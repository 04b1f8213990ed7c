"""The fallback ladder: provider tiers in order, then the answer cache, then the default answer.

Per job the happy path needs two reads and one write besides the LLM call: the fast-path
cache lookup and the first tier's breaker state (queue_prefetch), and the success bookkeeping
(queue_success: breaker record, cache fill, token correction). The worker queues them on the
pipelines of its claim and its result write, so they cost no round trip of their own; run()
without them makes one round trip for each. Rate limits add one round trip per call when a
provider has them; retries, fallbacks and half-open probes add their own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import structlog

from askq.config.settings import Settings
from askq.core.job import JobSpec, TokenUsage
from askq.errors import ContextTooLongError, InternalError, ProviderError, RateLimitedError, TierSkippedError
from askq.workers.breaker import Breaker, Permit
from askq.workers.cache import AnswerCache, CachedAnswer
from askq.workers.chain import Answer, Chain, prompt_chars
from askq.workers.errorclass import caller_fault, internal, provider_fault
from askq.workers.ratelimit import Grant, RateLimiter
from askq.workers.retry import ONE_TRY, Sleep, stop_reason, with_retries

log = structlog.get_logger("askq.ladder")

# answered: a tier answered (provider, cache or default); permanent: every tier refused the
# request itself (dead-letter it); exhausted: providers failed and on_exhausted="retry";
# internal: askq's own code or the job's data failed while asking a tier (dead-letter it,
# never counted against a provider).
Outcome = Literal["answered", "permanent", "exhausted", "internal"]
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
    # A provider answer whose bookkeeping the caller queues on its result write (defer_success).
    success: _Success | None = None


@dataclass(frozen=True)
class Prefetched:
    """What the ladder reads before its first tier: the first tier's breaker state and a cache hit."""

    first_state: str
    hit: CachedAnswer | None


@dataclass
class _TierRun:
    """One tier's progress through its attempts."""

    permit: Permit
    attempt: int = 0
    grant: Grant | None = None
    # The failed attempt whose log line waits for the retry decision (its wait).
    pending: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Success:
    """A tier's answer waiting for its bookkeeping (breaker success, cache fill, token usage)."""

    chain: Chain
    spec: JobSpec
    answer: Answer
    run: _TierRun


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

    async def aclose(self) -> None:
        """Close every tier's HTTP connection pool."""
        for chain in self.chains:
            await chain.aclose()

    async def run(self, spec: JobSpec, prefetched: Prefetched | None = None, defer_success: bool = False,
                  result: LadderResult | None = None) -> LadderResult:
        """Walk the tiers for a job.

        prefetched: the replies of queue_prefetch, read by the caller (else one round trip here).
        defer_success: leave a provider answer's bookkeeping to the caller (queue_success, then
        settle_success), instead of one round trip here. result: the caller's own record to fill
        (so the calls made are known even if the walk is cancelled midway).
        """
        result = result or LadderResult(outcome="exhausted")
        if prefetched is None:
            prefetched = await self._prefetch(spec)
        first_state, hit = prefetched.first_state, prefetched.hit
        # Only an answer from the first tier stands in for a fresh one: a fallback tier's answer
        # (simpler prompt, smaller model) is kept for the cache tier, where it counts as degraded.
        if hit is not None and hit.provider == self.chains[0].provider.name:
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
            except InternalError as exc:
                # askq's or the job's own fault: another tier (that might leave out the part that
                # failed) or a default answer would hide it, so the job is dead-lettered as it is.
                log.error("internal_error", provider=chain.provider.name, error=str(exc), exc_info=exc)
                result.counters["internal_errors"] += 1
                result.outcome, result.last_error = "internal", f"{chain.provider.name}: {exc}"
                return result
            result.outcome, result.answer, result.source = "answered", answer, chain.provider.name
            result.success = _Success(chain, spec, answer, run)
            if not defer_success:
                try:
                    await self._succeeded(result)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self.bookkeeping_failed(result, exc)
            return result
        if caller_only:
            result.outcome = "permanent"
            return result
        return await self._last_resort(spec, result)

    def queue_prefetch(self, pipe: Any, spec: JobSpec) -> int:
        """Queue the fast-path cache lookup and the first tier's breaker state; returns the count queued."""
        queued = 1
        if self.settings.cache_enabled and self.settings.cache_fast_path:
            self.cache.queue_get(pipe, spec)
            queued += 1
        self.breaker.queue_state(pipe, self.chains[0].provider.name)
        return queued

    def parse_prefetch(self, replies: list[Any]) -> Prefetched:
        """The replies of queue_prefetch, in order; an error reply raises it."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        state = replies[-1]
        state = state.decode() if isinstance(state, bytes) else str(state or "closed")
        return Prefetched(state, self.cache.parse(replies[0]) if len(replies) > 1 else None)

    async def _prefetch(self, spec: JobSpec) -> Prefetched:
        pipe = self.redis.pipeline(transaction=False)
        self.queue_prefetch(pipe, spec)
        return self.parse_prefetch(await pipe.execute())

    def queue_success(self, pipe: Any, result: LadderResult) -> None:
        """Queue a provider answer's bookkeeping: breaker success, cache fill, token correction."""
        done = result.success
        if done is None:
            return
        provider, run, answer = done.chain.provider, done.run, done.answer
        self.breaker.queue_record(pipe, provider.name, True, run.permit)
        if self.settings.cache_enabled:
            self.cache.queue_put(pipe, done.spec, answer.text, provider.name, answer.model)
        if run.grant is not None:
            self.limiter.queue_usage(pipe, provider, run.grant, answer.usage.total or run.grant.tokens)

    async def settle_success(self, result: LadderResult, replies: list[Any]) -> None:
        """Read the replies of queue_success (the breaker's first; the cache and usage writes need none)."""
        done, result.success = result.success, None
        if done is None or not replies:
            return
        provider = done.chain.provider
        try:
            recorded = await self.breaker.settle_queued(replies[0], provider.name, True, done.run.permit)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.bookkeeping_failed(result, exc)
            return
        if recorded.changed:
            log.warning("breaker_closed", provider=provider.name)

    @staticmethod
    def bookkeeping_failed(result: LadderResult, exc: Exception) -> None:
        """Bookkeeping only: the answer is good and the result write rides out the outage."""
        result.success = None
        log.warning("success_bookkeeping_failed", provider=result.source, error=str(exc))

    async def _succeeded(self, result: LadderResult) -> None:
        """One round trip: breaker success, cache fill, token correction."""
        pipe = self.redis.pipeline(transaction=False)
        self.queue_success(pipe, result)
        await self.settle_success(result, await pipe.execute(raise_on_error=False))

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
        except (TierSkippedError, InternalError, asyncio.CancelledError):
            # The probe never reached (or never judged) the provider, or its job was cancelled
            # meanwhile: hand it on rather than leave the breaker half-open until probe_timeout_s.
            if run.permit is Permit.PROBE:
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
        except TierSkippedError:  # nothing was sent: nothing to count for or against the provider
            self._note(result, name, run.attempt, "skipped", "not_sent")
            raise
        except ProviderError as err:
            run.pending = self._note(result, name, run.attempt, "failed", err.error_class,
                                     time.perf_counter() - started, err, log_now=False)
            recorded = await self.breaker.record(name, not provider_fault(err), run.permit)
            if run.permit is Permit.PROBE:
                run.permit = Permit.CALL  # reported: nothing left to hand back
            if recorded.changed:
                log.warning("breaker_" + ("opened" if recorded.state == "open" else recorded.state), provider=name)
            raise
        except InternalError:
            raise
        except Exception as exc:
            # chain.ask classifies what the call raised; what is left came from askq's own code.
            raise internal(exc, name) from exc
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
    # The error too: an on-call engineer reads what went wrong here (secrets are masked on output).
    fields = {k: v for k, v in entry.items() if k != "at"}
    log.info("attempt", **fields)
