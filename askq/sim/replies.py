"""HTTP responses in the exact shapes the OpenAI API (and so its SDK) produces."""

import itertools
import json
import math
import time

from aiohttp import web

from askq.sim.answers import count_tokens
from askq.sim.faults import FaultSpec

# status, error type, error code, message; `{model}` and `{key}` are filled in per request.
_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limit": (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        "Rate limit reached for {model} (simulated). Please try again later.",
    ),
    "server_error": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request (simulated).",
    ),
    "timeout": (408, "timeout", "request_timeout", "The request timed out (simulated)."),
    "bad_request": (400, "invalid_request_error", "invalid_request", "Invalid request (simulated)."),
    # Like some real providers, the 401 echoes the key it was given, so tests prove askq scrubs it.
    "auth": (401, "authentication_error", "invalid_api_key", "Incorrect API key provided: {key} (simulated)."),
    "forbidden": (
        403,
        "permission_error",
        "permission_denied",
        "You are not allowed to use {model} (simulated).",
    ),
    "not_found": (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it (simulated).",
    ),
    "content_policy": (
        400,
        "invalid_request_error",
        "content_filter",
        "Your request was rejected by the content policy (simulated).",
    ),
    "context_length": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length was exceeded by your messages (simulated).",
    ),
}

# Kinds answered by an error body: everything else produces a completion or no response.
ERROR_KINDS: frozenset[str] = frozenset(_ERRORS)

_ids = itertools.count(1)


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Serialise `data` as a JSON response; cheaper than web.json_response's extra checks."""
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_body(status: int, message: str, type_: str, code: str | None) -> web.Response:
    """Build an OpenAI-style error response with a free-form message."""
    return json_response({"error": {"message": message, "type": type_, "param": None, "code": code}}, status)


def auth_error(presented: str) -> web.Response:
    """Build the 401 for a wrong or missing key, echoing the key presented (never the expected one)."""
    if not presented:
        message = "You didn't provide an API key (simulated)."
    else:
        message = _ERRORS["auth"][3].format(key=presented)
    return error_body(401, message, "authentication_error", "invalid_api_key")


def fault_error(fault: FaultSpec, model: str, presented_key: str = "") -> web.Response:
    """Build the error response of an error-kind fault (rate limit, server error, ...)."""
    if fault.kind == "auth":
        return auth_error(presented_key)
    status, type_, code, message = _ERRORS[fault.kind]
    headers: dict[str, str] | None = None
    if fault.kind == "server_error" and fault.status is not None:
        status = fault.status
    elif fault.kind == "rate_limit":
        # OpenAI sends both; clients differ in which they honour.
        headers = {
            "Retry-After": str(math.ceil(fault.retry_after_s)),
            "retry-after-ms": str(round(fault.retry_after_s * 1000)),
        }
    return json_response(
        {"error": {"message": message.format(model=model), "type": type_, "param": None, "code": code}},
        status,
        headers,
    )


def completion_data(model: str, content: str, prompt_tokens: int, finish_reason: str) -> dict[str, object]:
    """Build a chat.completion object as the OpenAI API returns it."""
    completion_tokens = count_tokens(content)
    return {
        "id": f"chatcmpl-sim{next(_ids):08x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def completion(model: str, content: str, prompt_tokens: int, finish_reason: str = "stop") -> web.Response:
    """Build a successful chat completion response."""
    return json_response(completion_data(model, content, prompt_tokens, finish_reason))


def malformed(model: str, content: str, prompt_tokens: int) -> web.Response:
    """Build a 200 response that claims to be JSON but is cut mid-document."""
    text = json.dumps(completion_data(model, content, prompt_tokens, "stop"))
    return web.Response(body=text[: len(text) // 2].encode(), content_type="application/json")


def truncate(answer: str) -> str:
    """Cut an answer to about half its words, as a max_tokens stop would."""
    words = answer.split()
    return " ".join(words[: max(1, len(words) // 2)])
