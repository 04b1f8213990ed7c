"""The one table that maps what a provider did to what askq does about it.

| provider behaviour                             | askq error             | retried | breaker | then                |
|------------------------------------------------|------------------------|---------|---------|---------------------|
| 429 (Retry-After / retry-after-ms honoured)    | RateLimitedError       | yes     | failure | next tier when spent|
| 408, 409, 425, 5xx, timeout, connection reset  | TransientProviderError | yes     | failure | next tier when spent|
| malformed body (bare json.JSONDecodeError)     | TransientProviderError | yes     | failure | next tier when spent|
| 401, 403, 404 (key, permission, unknown model) | PermanentProviderError | never   | failure | next tier           |
| 400, 422, content policy                       | PermanentProviderError | never   | success | next tier, else dead|
| 400 context_length_exceeded                    | ContextTooLongError    | never   | success | next tier at once   |
| finish_reason=length, empty answer             | BadAnswerError         | never   | failure | next tier           |

"Breaker" says how the call counts in the provider's circuit breaker: a 400 proves the
provider is up (the request was at fault), a 401/403/404 or a useless answer means the tier
cannot serve anyone. When every tier refused a job with a permanent error (any 4xx other than
408/409/425/429, context too long), the job is dead-lettered as `permanent_error`; any other
mix (a transient failure, a skipped tier, a bad answer) goes on to the cache and default tiers.
"""

from __future__ import annotations

from collections.abc import Mapping

import openai

from config.logging import scrub
from core.errors import (
    BadAnswerError,
    ContextTooLongError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TierSkippedError,
    TransientProviderError,
)

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
# Permanent for the request, and for every other request too: the tier is unusable.
_UNUSABLE_STATUS = frozenset({401, 403, 404})


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the provider asked us to wait, from retry-after-ms or Retry-After."""
    if headers is None:
        return None
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            return max(0.0, float(headers["retry-after"]))
    except ValueError:  # an HTTP date: rare from LLM providers; fall back to our own backoff
        return None
    return None


def _error_code(exc: openai.APIStatusError) -> str:
    code = getattr(exc, "code", None)
    if code:
        return str(code)
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or "")
    return ""


def classify(exc: BaseException, provider: str) -> ProviderError:
    """Translate an exception raised while calling a provider into askq's error tree."""
    if isinstance(exc, ProviderError):
        return exc
    text = scrub(f"{type(exc).__name__}: {exc}")[:500]
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return RateLimitedError(text, provider, status, retry_after_s(exc.response.headers))
        if status >= 500 or status in _TRANSIENT_STATUS:
            return TransientProviderError(text, provider, status)
        if "context_length" in _error_code(exc):
            return ContextTooLongError(text, provider, status)
        return PermanentProviderError(text, provider, status)
    # Timeouts, resets, refused connections, and bodies that are not the JSON we expect
    # (the SDK raises a bare json.JSONDecodeError): the provider is having a bad moment.
    # Anything else unexpected is treated the same way: bounded retries, then the next tier.
    return TransientProviderError(text, provider)


def provider_fault(err: ProviderError) -> bool:
    """True when the error counts against the provider's circuit breaker (see the table)."""
    if isinstance(err, TierSkippedError):
        return False
    if isinstance(err, TransientProviderError | BadAnswerError):
        return True
    return err.status in _UNUSABLE_STATUS


def caller_fault(err: ProviderError) -> bool:
    """True when the tier refused the request (4xx): retrying the job later will not fix it."""
    return isinstance(err, PermanentProviderError) and not isinstance(err, BadAnswerError)
