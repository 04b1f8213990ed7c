"""One exception root for askq.

    AskqError
     ├── ConfigError                  settings or environment are wrong
     ├── InvalidJobError              a job or message breaks the contract (field, problem)
     ├── JobNotFoundError             no job with that id
     ├── WaitTimeoutError             a job did not finish within the wait
     ├── JobDeadError                 a run ended its job in the dead-letter queue (reason: error);
     │                                the answer task raises it so Celery and Flower report FAILURE
     ├── JobDeferredError             a run sent its job to a durable retry (the last error); the
     │                                answer task raises it inside Celery's Retry: Flower shows RETRY
     ├── DurabilityError              a strict submit was not confirmed on disk / by replicas in time:
     │                                retryable, the job may be in (same idempotency key: same job)
     ├── EmbeddedRedisError           the embedded Redis server could not be started
     ├── BenchError                   a benchmark or chaos run could not set up (e.g. workers did not start)
     ├── InternalError                askq's own code or the job's own data failed while asking a tier:
     │                                never the provider's fault (not retried, not in any breaker)
     └── ProviderError                an LLM tier gave no usable answer (provider, error_class)
          ├── TransientProviderError  retrying may help: 429, 408, 5xx, timeout, reset, bad body
          │    └── RateLimitedError   the provider asked to wait retry_after_s
          ├── TierSkippedError        breaker open or rate limit reached: not even tried
          └── PermanentProviderError  retrying will not help: 400, 401/403, 404, content policy
               ├── ContextTooLongError  a tier whose model accepts longer prompts may answer
               ├── RedirectedError      a 3xx: redirects are never followed (the prompt stays put)
               └── BadAnswerError       truncated (finish_reason=length) or empty answer
                    └── OversizedError  the response or its answer is over the tier's size caps

A ProviderError comes only from the provider or the network between (a status, a timeout, a
transport error, a body that is not the completion expected). Anything else raised while
asking a tier is an InternalError, so a bug in askq or a job that cannot be sent never counts
against a healthy provider.

Every exception pickles (Celery may store them), so extra attributes travel in args.

This module is a part of its own, below every other: it imports nothing of askq, so config,
core, producers, workers and the rest all raise from the same tree without importing each other.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class AskqError(Exception):
    """Root of every error askq raises on purpose."""


class ConfigError(AskqError):
    """Settings or environment are wrong."""


class InvalidJobError(AskqError):
    """A job or queue message breaks the contract."""


class JobNotFoundError(AskqError):
    """No job with that id exists."""


class WaitTimeoutError(AskqError):
    """A job did not reach a terminal state within the wait."""


class JobDeadError(AskqError):
    """A run ended its job in the dead-letter queue: `reason: error`, as in its dead letter."""


class JobDeferredError(AskqError):
    """A run sent its job to a durable retry: the error that made every tier fail."""
class DurabilityError(AskqError):
    """A strict submit was not confirmed durable in time; the jobs may be in (job_ids), retry is safe
    with the same idempotency keys."""

    def __init__(self, message: str, job_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message, job_ids)
        self.job_ids = job_ids

    def __str__(self) -> str:
        return str(self.args[0])


class EmbeddedRedisError(AskqError):
    """The embedded Redis server could not be started."""


class BenchError(AskqError):
    """A benchmark or chaos run could not set up, e.g. its workers did not start."""


class InternalError(AskqError):
    """askq's own code or the job's own data failed while asking a tier; not the provider's fault."""

    def __init__(self, message: str, provider: str = "") -> None:
        super().__init__(message, provider)
        self.message = message
        self.provider = provider

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args)


class ProviderError(AskqError):
    """An LLM tier gave no usable answer."""

    error_class = "provider_error"

    def __init__(self, message: str, provider: str = "", status: int | None = None) -> None:
        super().__init__(message, provider, status)
        self.message = message
        self.provider = provider
        self.status = status

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args)


class TransientProviderError(ProviderError):
    """Retrying may help: rate limit, timeout, 5xx, connection reset, malformed body."""

    error_class = "transient"


class RateLimitedError(TransientProviderError):
    """The provider answered 429 and may have said how long to wait."""

    error_class = "rate_limited"

    def __init__(
        self, message: str, provider: str = "", status: int | None = 429, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, provider, status)
        self.args = (message, provider, status, retry_after_s)
        self.retry_after_s = retry_after_s


class TierSkippedError(ProviderError):
    """The tier was not tried: its breaker is open or its rate limit is reached."""

    error_class = "skipped"


class PermanentProviderError(ProviderError):
    """Retrying will not help: bad request, auth, unknown model, content policy."""

    error_class = "permanent"


class ContextTooLongError(PermanentProviderError):
    """The prompt is longer than this tier's model accepts."""

    error_class = "context_too_long"


class RedirectedError(PermanentProviderError):
    """The provider answered with a redirect (3xx), which askq never follows."""

    error_class = "redirected"


class BadAnswerError(PermanentProviderError):
    """The answer was truncated (finish_reason=length) or empty."""

    error_class = "bad_answer"


class OversizedError(BadAnswerError):
    """The response (bytes, decompressed) or its answer (characters) is over the tier's caps."""

    error_class = "oversized"


def describe_validation(exc: ValidationError, whole: str = "payload") -> str:
    """A pydantic error as "field: problem; ..." — field paths and messages only, never the
    input values (which may hold secrets such as api keys)."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors())
