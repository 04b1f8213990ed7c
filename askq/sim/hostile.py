"""Replies of a hostile provider: a trickled reply, a huge body, a gzip bomb, a redirect.

Each one is a valid chat completion in the end (given time, memory or a followed redirect),
so a client that lacks the matching guard visibly accepts it: a test can tell a guard that
works from a reply that merely failed to parse.
"""

import asyncio
import functools
import json
import struct
import zlib

from aiohttp import web

from askq.sim.answers import answer_for
from askq.sim.faults import FaultSpec
from askq.sim.replies import completion, completion_data

# Where a redirect points by default: this simulator, answering differently (see `redirected`).
REDIRECTED_PATH = "/_sim/redirected/v1/chat/completions"
REDIRECTED_TAG = "[redirected] "
DEFAULT_TRICKLE_BYTES_PER_S = 10.0

_HOLE = "@@askq-sim-oversize@@"
_FILL = b"oversize " * 7282  # ~64 KiB of answer text per write
_BLOCK = 1 << 20


def _split_completion(model: str, prompt_tokens: int) -> tuple[bytes, bytes]:
    """The bytes of a completion before and after its answer text."""
    text = json.dumps(completion_data(model, _HOLE, prompt_tokens, "stop"), separators=(",", ":"))
    head, tail = text.split(_HOLE)
    return head.encode(), tail.encode()


def _fill(n: int) -> list[bytes]:
    """n bytes of answer text, in writes of ~64 KiB."""
    whole, rest = divmod(n, len(_FILL))
    return [_FILL] * whole + ([_FILL[:rest]] if rest else [])


async def trickle(request: web.Request, fault: FaultSpec, body: bytes) -> web.StreamResponse:
    """Send a completion a few bytes at a time: the body alone, or with trickle_headers the
    status line and headers too (written to the socket by hand, since aiohttp sends a head whole)."""
    rate = fault.trickle_bytes_per_s or DEFAULT_TRICKLE_BYTES_PER_S
    step = max(1, int(rate / 20))  # about twenty writes a second, whatever the rate
    pause = step / rate
    if fault.trickle_headers:
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        raw = head + body
        transport = request.transport
        for start in range(0, len(raw), step):
            if transport is None or transport.is_closing():
                break  # the client gave up; with handler cancellation this task is cancelled too
            transport.write(raw[start : start + step])
            await asyncio.sleep(pause)
        if transport is not None:
            transport.close()
        await asyncio.sleep(1.0)  # cancelled by the closed connection; nothing below is sent
        return web.Response(status=502)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    for start in range(0, len(body), step):
        await response.write(body[start : start + step])
        await asyncio.sleep(pause)
    await response.write_eof()
    return response


async def oversize(request: web.Request, fault: FaultSpec, model: str, prompt_tokens: int) -> web.StreamResponse:
    """Stream a completion whose answer is size_bytes long, with or without Content-Length."""
    head, tail = _split_completion(model, prompt_tokens)
    size = fault.body_bytes
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if fault.content_length is False:
        response.enable_chunked_encoding()
    else:
        response.content_length = len(head) + size + len(tail)
    await response.prepare(request)
    await response.write(head)
    for piece in _fill(size):
        await response.write(piece)  # waits while the client is not reading: memory stays flat
    await response.write(tail)
    await response.write_eof()
    return response


@functools.lru_cache(maxsize=4)
def _bomb(model: str, size: int) -> bytes:
    """A gzip body that inflates to a completion with a size-byte answer of "a"s (built once per size).

    Deflate restarts after a full flush, so every whole block of the answer packs to the same
    bytes: one block is compressed and repeated, and only the checksum reads all the data.
    """
    head, tail = _split_completion(model, 0)
    block = b"a" * _BLOCK
    whole, rest = divmod(size, _BLOCK)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate; gzip framing below

    def packed(data: bytes) -> bytes:
        return packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)

    deflated = [packed(head), packed(block) * whole, packed(block[:rest]), packer.compress(tail) + packer.flush()]
    crc = zlib.crc32(head)
    for _ in range(whole):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(tail, zlib.crc32(block[:rest], crc))
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name, mtime 0, best
    trailer = struct.pack("<II", crc, (len(head) + size + len(tail)) & 0xFFFFFFFF)
    return header + b"".join(deflated) + trailer


async def gzip_bomb(fault: FaultSpec, model: str) -> web.Response:
    """A small gzip body (about 1/500 of what it inflates to) with Content-Encoding: gzip."""
    body = await asyncio.to_thread(_bomb, model, fault.body_bytes)
    return web.Response(body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})


def redirect(fault: FaultSpec) -> web.Response:
    """A redirect (307 by default) to fault.location, or to this simulator's redirected endpoint."""
    status = fault.redirect_status or 307
    return web.Response(status=status, headers={"Location": fault.location or REDIRECTED_PATH})


def redirected(model: str, question: str, prompt_tokens: int) -> web.Response:
    """The answer behind the redirect: tagged, so a result shows when a client followed one."""
    return completion(model, REDIRECTED_TAG + answer_for(question, model), prompt_tokens)
