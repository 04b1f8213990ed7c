"""The fallback ladder: provider tiers in order, then the answer cache, then the default answer.

Per job the happy path needs two reads and one write besides the LLM call: the fast-path
cache lookup and the first tier's breaker state (reads(): they ride on the job's claim, and
run() takes their replies), and a provider answer's bookkeeping (breaker record, cache fill,
token correction: run() returns it in LadderResult.bookkeeping, and the result write carries
it). See askq/workers/riders.py. Rate limits add one round trip per call when a provider has
them; retries, fallbacks and half-open probes add their own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from askq.config.settings import Settings
from askq.core import clock, counters, keys
from askq.core.job import JobSpec, TokenUsage
from askq.errors import ContextTooLongError, InternalError, ProviderError, RateLimitedError, TierSkippedError
from askq.workers.breaker import Breaker, Permit
from askq.workers.cache import AnswerCache, CachedAnswer
from askq.workers.chain import Answer, Chain, prompt_chars
from askq.workers.errorclass import caller_fault, internal, provider_fault
from askq.workers.ratelimit import Grant, RateLimiter
from askq.workers.retry import ONE_TRY, Sleep, stop_reason, with_retries
from askq.workers.riders import Bookkeeping, Prefetched, Reads, Write

log = structlog.get_logger("askq.ladder")

# answered: a tier answered (provider, cache or default); permanent: every tier refused the
# request itself (dead-letter it); exhausted: providers failed and on_exhausted="retry";
# internal: askq's own code or the job's data failed while asking a tier (dead-letter it,
# never counted against a provider).
Outcome = Literal["answered", "permanent", "exhausted", "internal"]
# Tokens a completion is assumed to use before the provider reports the real figure.
COMPLETION_ESTIMATE = 256


@dataclass
class ProviderCalls:
    """One provider's calls for one job."""

    attempts: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # failed calls, by error class
    skipped: Counter[str] = field(default_factory=Counter)  # tiers skipped without a call, by why


@dataclass
class LadderResult:
    """What the ladder produced for one job, with the trail it took and what it counted."""

    outcome: Outcome
    answer: Answer | None = None
    source: str = ""
    degraded: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)  # the trail: one entry per call or skip
    last_error: str = ""
    calls: dict[str, ProviderCalls] = field(default_factory=dict)  # by provider
    fallbacks: int = 0
    cache_hits: int = 0
    default_answers: int = 0
    internal_errors: int = 0
    # A provider answer's writes, for the job's result write to carry (riders.Bookkeeping).
    bookkeeping: Bookkeeping | None = None

    def provider(self, name: str) -> ProviderCalls:
        calls = self.calls.get(name)
        if calls is None:
            calls = self.calls[name] = ProviderCalls()
        return calls

    @property
    def calls_made(self) -> int:
        return sum(c.attempts for c in self.calls.values())

    @property
    def faults(self) -> int:
        return sum(sum(c.errors.values()) for c in self.calls.values())

    @property
    def retries(self) -> int:
        return sum(c.retries for c in self.calls.values())

    def counts(self) -> Counter[str]:
        """Its counters as stats-hash fields (askq/core/counters.py)."""
        out: Counter[str] = Counter()
        for name, calls in self.calls.items():
            out[counters.ATTEMPTS.field(name)] += calls.attempts
            out[counters.RETRIES.field(name)] += calls.retries
            for error_class, n in calls.errors.items():
                out[counters.ERRORS.field(name, error_class)] += n
            for why, n in calls.skipped.items():
                out[counters.SKIPPED.field(name, why)] += n
        out[counters.FALLBACKS.field()] += self.fallbacks
        out[counters.CACHE_HITS.field()] += self.cache_hits
        out[counters.DEFAULT_ANSWERS.field()] += self.default_answers
        out[counters.INTERNAL_ERRORS.field()] += self.internal_errors
        return +out  # only what is above zero


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
        self.sleep = sleep
        self.chains = [Chain(p) for p in settings.providers]

    async def aclose(self) -> None:
        """Close every tier's HTTP connection pool."""
        for chain in self.chains:
            await chain.aclose()

    def reads(self, spec: JobSpec) -> Reads:
        """What run() needs read before its first tier, to queue on the job's claim."""
        fast = self.settings.cache_enabled and self.settings.cache_fast_path
        return Reads(keys.breaker(self.chains[0].provider.name), self.cache.key(spec) if fast else None)

    async def run(self, spec: JobSpec, prefetched: Prefetched, result: LadderResult) -> LadderResult:
        """Walk the tiers for a job, filling result (so the calls made are known even if the walk
        is cancelled midway). prefetched: the replies of reads(spec), read on the job's claim. A
        provider answer's bookkeeping is left in result.bookkeeping for the result write to carry.
        """
        first_state, hit = prefetched.first_state, prefetched.hit
        # Only an answer from the first tier stands in for a fresh one: a fallback tier's answer
        # (simpler prompt, smaller model) is kept for the cache tier, where it counts as degraded.
        if hit is not None and hit.provider == self.chains[0].provider.name:
            result.cache_hits += 1
            log.info("tier_answered", provider="cache", degraded=False, fast_path=True)
            return self._cached(result, hit, degraded=False)
        caller_only = True
        for index, chain in enumerate(self.chains):
            if index > 0:
                result.fallbacks += 1
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
                result.internal_errors += 1
                result.outcome, result.last_error = "internal", f"{chain.provider.name}: {exc}"
                return result
            result.outcome, result.answer, result.source = "answered", answer, chain.provider.name
            result.bookkeeping = self._bookkeeping(chain, spec, answer, run)
            return result
        if caller_only:
            result.outcome = "permanent"
            return result
        return await self._last_resort(spec, result)

    def _bookkeeping(self, chain: Chain, spec: JobSpec, answer: Answer, run: _TierRun) -> Bookkeeping:
        """A provider answer's writes: breaker success, cache fill, token correction."""
        provider = chain.provider
        writes: list[Write] = []
        if self.settings.cache_enabled:
            writes.append(self.cache.fill(spec, answer.text, provider.name, answer.model))
        if run.grant is not None:
            fix = self.limiter.usage_fix(provider, run.grant, answer.usage.total or run.grant.tokens)
            if fix is not None:
                writes.append(fix)
        return Bookkeeping(provider.name, self.breaker.record_call(provider.name, True, run.permit), tuple(writes))

    async def _last_resort(self, spec: JobSpec, result: LadderResult) -> LadderResult:
        """Cache tier, then the default answer (or a durable retry, when so configured)."""
        if self.settings.cache_enabled:
            result.fallbacks += 1
            hit = await self.cache.get(spec)
            if hit is not None:
                result.cache_hits += 1
                log.info("tier_answered", provider="cache", degraded=True)
                return self._cached(result, hit, degraded=True)
        if self.settings.on_exhausted == "retry":
            result.outcome = "exhausted"
            log.info("ladder_exhausted", error=result.last_error)
            return result
        result.fallbacks += 1
        result.default_answers += 1
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
            result.provider(name).retries += 1
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
        result.provider(name).attempts += 1
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
            "at": round(clock.now(), 3),
        }
        if err is not None:
            entry["status"] = err.status
            entry["error"] = str(err)[:300]
            if isinstance(err, RateLimitedError) and err.retry_after_s is not None:
                entry["retry_after_s"] = err.retry_after_s
            result.provider(provider).errors[error_class] += 1
        if outcome == "skipped":
            result.provider(provider).skipped[error_class] += 1
        result.attempts.append(entry)
        if log_now:
            _log_attempt(entry)
        return entry


def _log_attempt(entry: dict[str, Any]) -> None:
    # The error too: an on-call engineer reads what went wrong here (secrets are masked on output).
    fields = {k: v for k, v in entry.items() if k != "at"}
    log.info("attempt", **fields)
