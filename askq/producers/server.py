"""How `askq api` is served: uvicorn on its h11 protocol, plus the header timeout uvicorn lacks.

uvicorn closes a connection that is idle *after* a response (`timeout_keep_alive`), but it has
no limit on how long a client may take to send a request's headers: a connection that never
finishes them is held forever, and uvicorn's `limit_concurrency` counts such connections, so
2,100 of them made every request (the probes too) a 503. `GuardedH11Protocol` gives each
connection `api.header_timeout_s` to send a complete set of headers, from its opening or from the
end of its previous response; it is then answered 408 and closed. Connections still sending
headers are also capped (`api.max_pending_connections`): past the cap the oldest is dropped if it
has owed its headers for a second or more, so idle sockets cannot fill the connection limit while
they wait for their timeout, and a burst of real callers (accepted faster than their headers are
read) is not mistaken for them.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

from askq.config.settings import ApiSettings

log = structlog.get_logger("askq.api")

_TIMEOUT_REPLY = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                  b"connection: close\r\ncontent-length: 37\r\n\r\nrequest headers not received in time\n")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers and a cap on those awaited."""

    header_timeout_s: ClassVar[float] = 10.0
    max_pending: ClassVar[int] = 512
    # A pending connection younger than this is never dropped for the cap (see the module docstring).
    grace_s: ClassVar[float] = 1.0
    # The server's connections that still owe request headers, oldest first, with when they began to.
    pending: ClassVar[dict[GuardedH11Protocol, float]] = {}

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_received()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a new request cycle: its headers are complete
            self._headers_received()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        # The next request's headers are owed now, unless a pipelined one already started.
        if self.cycle is cycle and not self.transport.is_closing():
            self._await_headers()

    def _await_headers(self) -> None:
        self._headers_received()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._drop, "header_timeout")
        now = self.loop.time()
        self.pending[self] = now
        while len(self.pending) > self.max_pending:
            oldest, since = next(iter(self.pending.items()))
            if now - since < self.grace_s:
                break  # a burst of new connections, not idle ones: uvicorn's limit_concurrency still bounds it
            oldest._drop("too_many_pending")

    def _headers_received(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.pending.pop(self, None)

    def _drop(self, why: str) -> None:
        self._headers_received()
        if not self.transport.is_closing():
            if why == "header_timeout":
                self.transport.write(_TIMEOUT_REPLY)
            self.transport.close()
        log.debug("connection_dropped", reason=why, client=self.client)


def protocol_for(api: ApiSettings) -> type[GuardedH11Protocol]:
    """A protocol class for one server: its own limits and its own table of pending connections."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout_s": api.header_timeout_s, "max_pending": api.max_pending_connections, "pending": {},
    })


def uvicorn_options(api: ApiSettings) -> dict[str, Any]:
    """The uvicorn settings askq serves with (listed in the README's HTTP API section)."""
    return {
        "http": protocol_for(api),
        # Idle time allowed after a response before the connection is closed.
        "timeout_keep_alive": api.keep_alive_s,
        # Connections (pending, active and idle together) beyond which uvicorn answers 503.
        "limit_concurrency": api.max_connections,
        # The kernel's queue of connections not yet accepted.
        "backlog": 2048,
        # Largest request line plus headers h11 buffers before it answers 400 (h11's default is 16 KiB).
        "h11_max_incomplete_event_size": 16 * 1024,
        "access_log": api.access_log,
    }
