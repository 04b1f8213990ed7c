"""Who is using the console: a bearer token, a login cookie, or (with no tokens) a loopback client.

The cookie never holds the token: it holds the token's fingerprint, an expiry and an HMAC keyed
with the token itself, so removing a token from `api.tokens` ends its sessions, and a cookie
cannot be forged without the token. Forms that change state carry a CSRF value derived the same
way (and the cookie is SameSite=Strict); a POST whose Origin is another site is refused too.
With no tokens configured the API only listens on loopback; the console then also refuses a
client that is not on loopback, or a Host header that is not a loopback name (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from askq.core import keys
from askq.producers.routes.common import is_loopback, refuse_rebound_host

COOKIE = "askq_console"


@dataclass(frozen=True, slots=True)
class Operator:
    """Who acts: named by the fingerprint of their token (never the token), or `loopback`."""

    name: str
    csrf: str
    by_bearer: bool = False


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a request may not use the console: not signed in (401: the login form) or refused (403)."""

    status: int
    message: str


def fingerprint(token: bytes) -> str:
    """A short public name for a token: enough to tell tokens apart in the audit, useless to log in."""
    return hashlib.sha256(b"askq-token-fingerprint|" + token).hexdigest()[:12]


def _sign(key: bytes, *parts: str) -> str:
    return hmac.new(key, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def _token_of(tokens: list[bytes], given: bytes) -> bytes | None:
    # Compare against every token so the time taken does not tell which one nearly matched.
    matches = [t for t in tokens if hmac.compare_digest(given, t)]
    return matches[0] if matches else None


def session_cookie(token: bytes, session_s: int, now: float | None = None) -> str:
    """The cookie value for a login with this token: each sign-in its own (a nonce), so one can end alone."""
    fp, expires, nonce = fingerprint(token), str(int((now or time.time()) + session_s)), secrets.token_hex(8)
    return f"{fp}.{expires}.{nonce}.{_sign(token, 'session', fp, expires, nonce)}"


def _signed_out(request: Request, signature: str) -> bool:
    redis: Any = request.app.state.client.redis
    return bool(redis.exists(keys.console_signed_out(signature)))


def sign_out(request: Request) -> None:
    """End this request's cookie session for every copy of the cookie, until it would have expired.

    The cookie is stateless, so clearing it in one browser leaves a copy (another browser, a proxy
    log) working: the signature is recorded in Redis as signed out instead.
    """
    if not isinstance(operator_of(request), Operator):
        return
    _fp, expires, _nonce, signature = request.cookies.get(COOKIE, "").split(".")
    left_s = int(expires) - int(time.time())
    if left_s > 0:
        request.app.state.client.redis.set(keys.console_signed_out(signature), "1", ex=left_s + 1)


def check_token(request: Request, given: str) -> bytes | None:
    """The configured token equal to `given`, or None."""
    tokens: list[bytes] = request.app.state.tokens
    return _token_of(tokens, given.encode("utf-8", "surrogateescape")) if given else None


def operator_of(request: Request) -> Operator | Denied:
    """Who this request is, or why it may not use the console."""
    tokens: list[bytes] = request.app.state.tokens
    if not tokens:
        client = request.client.host if request.client else ""
        host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
        if not (is_loopback(client) and is_loopback(host)):
            return Denied(403, "with no api.tokens configured the console answers loopback clients only")
        secret: bytes = request.app.state.console_secret
        return Operator("loopback", _sign(secret, "csrf", "loopback"))
    bearer = request.headers.get("authorization", "")
    if bearer[:7].lower() == "bearer ":
        token = check_token(request, bearer[7:].strip())
        if token is None:
            return Denied(401, "that bearer token is not one of api.tokens")
        return Operator(f"token:{fingerprint(token)}", "", by_bearer=True)
    parts = request.cookies.get(COOKIE, "").split(".")
    if len(parts) != 4:
        return Denied(401, "sign in with an API token")
    fp, expires, nonce, signature = parts
    for token in tokens:
        if hmac.compare_digest(fingerprint(token), fp) and hmac.compare_digest(
                _sign(token, "session", fp, expires, nonce), signature):
            if not expires.isdigit() or int(expires) < time.time():
                return Denied(401, "your console session has expired: sign in again")
            if _signed_out(request, signature):
                return Denied(401, "this console session was signed out: sign in again")
            return Operator(f"token:{fp}", _sign(token, "csrf", fp, expires, nonce))
    return Denied(401, "sign in with an API token")


def same_origin(request: Request) -> bool:
    """False for a browser POST sent from another site (its Origin names another host)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # No Origin: not a browser's cross-site form post (those send it); "null" is an opaque origin.
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def csrf_ok(operator: Operator, given: str) -> bool:
    """A state-changing form must carry the session's CSRF value (bearer callers are no browser)."""
    return operator.by_bearer or (bool(given) and hmac.compare_digest(operator.csrf, given))


async def docs_access(request: Request) -> None:
    """/docs, /redoc and /openapi.json: a bearer token as for every route, or a console sign-in.

    A browser cannot send a bearer token for a page; an operator signed in to the console can
    read the API's documentation in the same browser. Only these read-only pages take the cookie.
    """
    if not request.app.state.tokens:
        refuse_rebound_host(request)  # as the API: only on a loopback address (producers.api.check_exposure)
        return
    # operator_of reads Redis (a signed-out session): off the event loop.
    if isinstance(await run_in_threadpool(operator_of, request), Denied):
        raise HTTPException(401, "a valid bearer token (or a console sign-in) is required",
                            headers={"WWW-Authenticate": "Bearer"})
