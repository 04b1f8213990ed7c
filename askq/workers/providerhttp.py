"""The HTTP client askq asks a provider through: size caps, no redirects, and how far a call got.

The openai SDK's aiohttp client reads a whole body into memory, inflates any gzip in full and
follows redirects (re-posting the prompt to wherever they point). Wrapped around its
transport here:

- a redirect (3xx) is a RedirectedError at once; it is never followed;
- a body over `max_response_bytes` is an OversizedError: a declared Content-Length before
  anything is read, else while reading, counting bytes on the wire and, for gzip or deflate,
  bytes after inflating (inflated here in bounded steps, so a bomb never expands past the cap);
- each call's Exchange records whether its request reached the transport and whether the
  whole body came back, so an exception can be told to be the provider's (while or after
  talking to it) or askq's own (before anything was sent).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai

from askq.config.settings import ProviderSettings
from askq.errors import InternalError, OversizedError, RedirectedError, TransientProviderError

# The encodings askq can inflate under a cap; requests ask for these alone.
_ACCEPTED = ("gzip", "deflate")


@dataclass
class Exchange:
    """How far one provider call got."""

    sent: bool = False  # the request reached the transport (built and encoded: askq's part is done)
    received: bool = False  # the whole response body was read (what fails after is parsing it)


_CURRENT: ContextVar[Exchange | None] = ContextVar("askq_provider_exchange", default=None)


@contextmanager
def tracking() -> Iterator[Exchange]:
    """Record how far the provider call made inside this block gets."""
    exchange = Exchange()
    token = _CURRENT.set(exchange)
    try:
        yield exchange
    finally:
        _CURRENT.reset(token)


def provider_client(provider: ProviderSettings) -> httpx2.AsyncClient:
    """The SDK's aiohttp client for one tier, guarded. One per tier and worker process."""
    return _GuardedAioHttpClient(provider, timeout=provider.timeout_s, follow_redirects=False)


class _GuardedAioHttpClient(openai.DefaultAioHttpClient):
    """openai.DefaultAioHttpClient (its pool limits, proxies from the environment) with every
    transport it builds wrapped in a _GuardedTransport."""

    def __init__(self, provider: ProviderSettings, **kwargs: Any) -> None:
        self._provider = provider  # set first: the base class builds its transports in __init__
        super().__init__(**kwargs)

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
        return _GuardedTransport(super()._init_transport(*args, **kwargs), self._provider)

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
        return _GuardedTransport(super()._init_proxy_transport(*args, **kwargs), self._provider)


class _GuardedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, provider: ProviderSettings) -> None:
        self.inner = inner
        self.name = provider.name
        self.cap = provider.max_response_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        exchange = _CURRENT.get()
        if exchange is not None:
            exchange.sent = True
        request.headers["Accept-Encoding"] = ", ".join(_ACCEPTED)
        response = await self.inner.handle_async_request(request)
        try:
            self._check_head(response)
            inflater = _inflater(response.headers.get("content-encoding", ""), self.name)
            stream = response.stream
            if not isinstance(stream, httpx2.AsyncByteStream):
                raise InternalError(f"the async transport returned a {type(stream).__name__} body stream", self.name)
        except BaseException:
            await response.aclose()
            raise
        # Inflated here, so httpx must not inflate again; the length is that of the wire bytes.
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in (b"content-encoding", b"content-length")]
        capped = _CappedStream(stream, inflater, self.cap, self.name, response.status_code, exchange)
        return httpx2.Response(response.status_code, headers=headers, stream=capped, request=request,
                               extensions=response.extensions)

    def _check_head(self, response: httpx2.Response) -> None:
        status = response.status_code
        if 300 <= status < 400:
            location = response.headers.get("location", "")
            where = urlsplit(location).hostname or "a path on the same host"
            raise RedirectedError(f"redirect ({status}) to {where} not followed", self.name, status)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.cap:
            raise OversizedError(f"response of {int(declared)} bytes (Content-Length) is over max_response_bytes "
                                 f"({self.cap})", self.name, status)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Inflater:
    """gzip or deflate, inflated in steps no larger than asked for."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.started = False
        wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self.zlib = zlib.decompressobj(wbits)

    def inflate(self, data: bytes, room: int) -> tuple[bytes, bytes]:
        """Inflate at most room bytes out of data; returns them and the input not yet used."""
        try:
            out = self.zlib.decompress(data, room)
        except zlib.error:
            if self.started or self.encoding != "deflate":
                raise
            # "deflate" is sent both zlib-wrapped (as specified) and raw (as some servers do).
            self.zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self.zlib.decompress(data, room)
        self.started = True
        return out, self.zlib.unconsumed_tail

    def flush(self) -> bytes:
        return self.zlib.flush()


def _inflater(encoding: str, provider: str) -> _Inflater | None:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflater(encoding)
    # Not one askq asked for: it cannot be inflated under a cap, so it is not read at all.
    raise TransientProviderError(f"response with Content-Encoding {encoding[:40]!r}, which askq did not ask for",
                                 provider)


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, inflater: _Inflater | None, cap: int, provider: str,
                 status: int, exchange: Exchange | None) -> None:
        self.inner = inner
        self.inflater = inflater
        self.cap = cap
        self.provider = provider
        self.status = status
        self.exchange = exchange

    def _over(self, what: str) -> OversizedError:
        # Whatever the status said (an error's body is capped too): the reply is unusable.
        return OversizedError(f"response over max_response_bytes ({self.cap}) {what}", self.provider, self.status)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        wire = 0
        out = 0
        async for chunk in self.inner:
            wire += len(chunk)
            if wire > self.cap:
                raise self._over("on the wire")
            if self.inflater is None:
                out = wire
                yield chunk
                continue
            data = chunk
            while data:
                # One byte more than the room left: enough to know the cap was passed.
                try:
                    piece, data = self.inflater.inflate(data, self.cap - out + 1)
                except zlib.error as exc:
                    raise TransientProviderError(f"response body could not be inflated: {exc}", self.provider) from exc
                out += len(piece)
                if out > self.cap:
                    raise self._over("once inflated")
                if piece:
                    yield piece
        if self.inflater is not None:
            try:
                rest = self.inflater.flush()
            except zlib.error as exc:
                raise TransientProviderError(f"response body could not be inflated: {exc}", self.provider) from exc
            if out + len(rest) > self.cap:
                raise self._over("once inflated")
            if rest:
                yield rest
        if self.exchange is not None:
            self.exchange.received = True

    async def aclose(self) -> None:
        await self.inner.aclose()
