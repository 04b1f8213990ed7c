"""The one table that maps what a provider did to what askq does about it.

| provider behaviour                                  | askq error              | askq action            |
|-----------------------------------------------------|-------------------------|------------------------|
| 429 (Retry-After / retry-after-ms honoured)         | RateLimitedError        | retry, or next tier    |
| 408, 409, 5xx, timeout, connection reset, bad body  | TransientProviderError  | retry with backoff     |
| 400 context_length_exceeded                         | ContextTooLongError     | next tier at once      |
| 400, 401, 403, 404, 422, content policy             | PermanentProviderError  | next tier, never retry |
| finish_reason=length, empty answer                  | BadAnswerError          | next tier              |
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx
import openai

from config.logging import scrub
from core.errors import (
    ContextTooLongError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


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
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or "")
        return str(body.get("code") or "")
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
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | httpx.TransportError | TimeoutError):
        return TransientProviderError(text, provider)
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | ValueError | KeyError):
        # A body that is not the JSON we expect: the provider is having a bad moment.
        return TransientProviderError(text, provider)
    return TransientProviderError(text, provider)
