"""Now on the Redis server's clock: one clock for every host, whatever each host's own says.

Leases, retry due times, the breaker's and the rate limiter's windows, heartbeats, expiries and
the reaper compare instants written by different hosts, so they must all come from one clock.
A host whose wall clock runs 30 s ahead would otherwise renew leases that look expired to
nobody, or reclaim a live worker's jobs. Every such instant is read here.

A reading (`TIME`) is taken at most every RESYNC_S seconds per process; between readings the
time is carried forward on this process's monotonic clock, which a wrong or stepped wall clock
does not move. The reading's error is half the round trip (sub-millisecond on a LAN).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

# Seconds between readings: rate drift of a monotonic clock over this is microseconds.
RESYNC_S = 10.0


class ServerClock:
    """The Redis server's clock, carried forward on the local monotonic clock between readings."""

    def __init__(self, resync_s: float = RESYNC_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.resync_s = resync_s
        self.monotonic = monotonic
        # (server epoch seconds, local monotonic seconds) at the last reading; None: none yet.
        self._base: tuple[float, float] | None = None

    @property
    def synced(self) -> bool:
        return self._base is not None

    def now(self) -> float:
        """Server time now, from the last reading. Before any reading in this process (a path
        that never talked to Redis yet) it is the local clock: nothing compared across hosts
        has been written by then, and the first Redis call below reads the server's."""
        if self._base is None:
            return time.time()
        server, local = self._base
        return server + (self.monotonic() - local)

    def _stale(self) -> bool:
        return self._base is None or self.monotonic() - self._base[1] >= self.resync_s

    def _take(self, before: float, reply: Any) -> None:
        after = self.monotonic()
        seconds, micros = (int(x) for x in reply)
        self._base = (seconds + micros / 1e6, (before + after) / 2)

    def read(self, client: Any) -> float:
        """Server time now, reading TIME from a synchronous client when the last reading is old."""
        if self._stale():
            before = self.monotonic()
            self._take(before, client.time())
        return self.now()

    async def aread(self, client: Any) -> float:
        """Server time now, reading TIME from an asyncio client when the last reading is old."""
        if self._stale():
            before = self.monotonic()
            reply: Awaitable[Any] = client.time()
            self._take(before, await reply)
        return self.now()


# The process's clock. One Redis deployment per process; hosts of one deployment share its clock.
SERVER = ServerClock()


def now() -> float:
    """Server time now (see ServerClock.now)."""
    return SERVER.now()


def read(client: Any) -> float:
    return SERVER.read(client)


async def aread(client: Any) -> float:
    return await SERVER.aread(client)
