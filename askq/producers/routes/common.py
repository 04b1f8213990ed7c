"""What every route shares: the bearer-token check, the client dependency and the 422 body."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from askq.producers.client import Client

# Module level: route annotations are resolved against module globals.
_BEARER = HTTPBearer(auto_error=False)

class Message(BaseModel):
    """The body of every error but a 422: what went wrong, in one sentence."""

    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Message, "description": "no such job or dead letter"}}

# What every route behind the token may answer besides its own replies (declared in the schema).
GUARDED: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "no valid bearer token",
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}},
    503: {"model": Message, "description": "the job store (Redis) is unreachable; retry later",
          "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}},
}


class Problem(BaseModel):
    field: str
    problem: str


class ValidationProblem(BaseModel):
    """The 422 body: what is wrong, field by field."""

    message: str
    detail: list[Problem]


BAD_INPUT: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationProblem, "description": "bad input; nothing was enqueued"}
}


async def client_of(request: Request) -> Client:
    """The app's one Client (set by create_app), shared by every request (async: no thread hop)."""
    client: Client = request.app.state.client
    return client


ClientDep = Annotated[Client, Depends(client_of)]


async def authorize(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
) -> None:
    """Let the request through only with one of `api.tokens` as its bearer token.

    Async although it never awaits: a sync dependency costs every request a threadpool hop, and
    a burst of long-polls would fill the pool the probes need.
    """
    tokens: list[bytes] = request.app.state.tokens
    if not tokens:
        refuse_rebound_host(request)  # only possible on a loopback address, see producers.api.check_exposure
        return
    given = credentials.credentials.encode() if credentials else b""
    # Compare against every token so the time taken does not tell which one nearly matched.
    if not any([hmac.compare_digest(given, t) for t in tokens]):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


AUTH = [Depends(authorize)]


def refuse_rebound_host(request: Request) -> None:
    """Without tokens, a 403 for a request whose Host is not a loopback name.

    The API then listens on loopback only, but a web page whose host name resolves to 127.0.0.1
    (DNS rebinding) is same-origin with it in the operator's browser and could read every job and
    purge dead letters; the browser still sends the page's own name in Host.
    """
    host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
    if not is_loopback(host):
        raise HTTPException(403, f"with no api.tokens configured the API answers loopback host names only, "
                                 f"not {host[:80]!r}: use 127.0.0.1 or localhost, or configure api.tokens")


def is_loopback(host: str) -> bool:
    """Whether a host (name or address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not take: `?wiat=30` must not silently mean wait=0."""
    known: set[str] = set()
    todo = [getattr(request.scope.get("route"), "dependant", None)]
    while todo:  # the route's own query parameters and those of its dependencies, at any depth
        dependant = todo.pop()
        if dependant is not None:
            known |= {p.alias for p in dependant.query_params}
            todo += dependant.dependencies
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "msg": "unknown query parameter"} for name in unknown])


def problems_of(errors: list[Any]) -> list[Problem]:
    """Pydantic/FastAPI error dicts as field/problem pairs (request-part prefixes dropped)."""
    found = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        found.append(Problem(field=".".join(loc) or "body", problem=str(err.get("msg", "invalid"))))
    return found


def problem_response(problems: list[Problem]) -> JSONResponse:
    """The 422 reply for these problems; its message joins them into one line."""
    message = "; ".join(f"{p.field}: {p.problem}" for p in problems)
    return JSONResponse(status_code=422, content=ValidationProblem(message=message, detail=problems).model_dump())
