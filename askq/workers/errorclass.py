"""The one table that maps what a provider did to what askq does about it.

| provider behaviour                              | askq error             | retried | breaker | then                 |
|-------------------------------------------------|------------------------|---------|---------|----------------------|
| 429 (Retry-After / retry-after-ms honoured)     | RateLimitedError       | yes     | failure | next tier when spent |
| 408, 409, 425, 5xx, connection reset            | TransientProviderError | yes     | failure | next tier when spent |
| no complete response within timeout_s (total)   | TransientProviderError | yes     | failure | next tier when spent |
| malformed body (not JSON, or not a completion)  | TransientProviderError | yes     | failure | next tier when spent |
| 401, 403, 404 (key, permission, unknown model)  | PermanentProviderError | never   | failure | next tier, else dead |
| 3xx (redirects are never followed)              | RedirectedError        | never   | failure | next tier, else dead |
| 400, 422, content policy                        | PermanentProviderError | never   | success | next tier, else dead |
| 400 context_length_exceeded                     | ContextTooLongError    | never   | success | next tier at once    |
| finish_reason=length, empty, lone surrogate     | BadAnswerError         | never   | failure | next tier            |
| body > max_response_bytes (inflated), answer    | OversizedError         | never   | failure | next tier            |
|   > max_answer_chars                            |                        |         |         |                      |
| askq's own code or the job's own data failed    | InternalError          | never   | none    | dead: internal_error |

"Breaker" says how the call counts in the provider's circuit breaker: a 400 proves the
provider is up (the request was at fault), a 401/403/404, a redirect or a useless answer means
the tier cannot serve anyone. When every tier refused a job with a permanent error (any 3xx or
4xx other than 408/409/425/429, context too long), the job is dead-lettered as
`permanent_error`; any other mix (a transient failure, a skipped tier, a bad or oversized
answer) goes on to the cache and default tiers. An oversized reply is not retried: a provider
that sent one is likely to send it again, and each try would read up to the cap once more.

Only what comes from the provider or the network is a provider error: an openai status,
connection or timeout error, a transport error, or any exception once the whole body was read
(parsing it failed). An exception before the request reached the transport (building or
encoding it, e.g. a lone surrogate in a context document) is askq's or the job's own fault:
an InternalError, which stops the ladder and dead-letters the job `internal_error`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING

import aiohttp
import httpx
import httpx2
import openai

from askq.config.logging import scrub
from askq.errors import (
    BadAnswerError,
    ContextTooLongError,
    InternalError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    RedirectedError,
    TierSkippedError,
    TransientProviderError,
)

if TYPE_CHECKING:
    from askq.workers.providerhttp import Exchange

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


# Raised by the network or the provider's side of the exchange, whenever they are raised.
_NETWORK: tuple[type[BaseException], ...] = (
    openai.APIConnectionError,  # timeouts included
    openai.APIResponseValidationError,
    httpx2.HTTPError,
    httpx.HTTPError,
    aiohttp.ClientError,
    TimeoutError,
    ConnectionError,
    ssl.SSLError,
)


def unicode_safe(text: str) -> str:
    """text with anything UTF-8 cannot encode (lone surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe(exc: BaseException) -> str:
    """An exception as one bounded line for logs and dead letters: secrets masked, always encodable."""
    return scrub(unicode_safe(f"{type(exc).__name__}: {exc}"))[:500]


def classify(exc: BaseException, provider: str, exchange: Exchange) -> ProviderError | InternalError:
    """Translate an exception raised while calling a provider into askq's error tree.

    exchange says how far the call got (askq/workers/providerhttp.py): an exception of no known
    network kind is the provider's when it came while talking to it or once its body was read
    (a body that is JSON but not a completion), and askq's or the job's before anything was sent.
    """
    if isinstance(exc, ProviderError | InternalError):
        return exc
    text = describe(exc)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return RateLimitedError(text, provider, status, retry_after_s(exc.response.headers))
        if status >= 500 or status in _TRANSIENT_STATUS:
            return TransientProviderError(text, provider, status)
        if 300 <= status < 400:  # the guarded transport refuses these first; kept for any other path
            return RedirectedError(text, provider, status)
        if "context_length" in _error_code(exc):
            return ContextTooLongError(text, provider, status)
        return PermanentProviderError(text, provider, status)
    if isinstance(exc, _NETWORK):
        return TransientProviderError(text, provider)
    if exchange.received:
        # The whole body came back but is not the completion expected (the SDK raises a bare
        # json.JSONDecodeError for broken JSON; LangChain a TypeError or ValueError for `{}`).
        return TransientProviderError(f"malformed response: {text}", provider)
    if exchange.sent:
        return TransientProviderError(f"transport: {text}", provider)
    return internal(exc, provider)


def internal(exc: BaseException, provider: str) -> InternalError:
    """An exception that is askq's or the job's own, raised while asking a tier."""
    return InternalError(f"{describe(exc)} (askq's or the job's own fault, not the provider's)", provider)


def provider_fault(err: ProviderError) -> bool:
    """True when the error counts against the provider's circuit breaker (see the table)."""
    if isinstance(err, TierSkippedError):
        return False
    if isinstance(err, TransientProviderError | BadAnswerError | RedirectedError):
        return True
    return err.status in _UNUSABLE_STATUS


def caller_fault(err: ProviderError) -> bool:
    """True when the tier refused the request (4xx): retrying the job later will not fix it."""
    return isinstance(err, PermanentProviderError) and not isinstance(err, BadAnswerError)
