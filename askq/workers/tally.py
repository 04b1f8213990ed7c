"""A job's counters as one Redis command: core.stats' HINCRBY/HINCRBYFLOAT/EXPIRE, batched in Lua.

core.stats.add_job_outcome queues about twenty small commands per finished job (counters,
health bucket, latency histograms). On the worker's hot path packing and parsing each of
them costs more CPU than Redis spends on all of them, so the worker records what
add_job_outcome would queue and sends it as one EVALSHA of a script that replays it.
core.stats stays the one place that decides which counters a job adds to.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aredis

from askq.core.scripts import QueuedScript


class Tally:
    """Stands in for a pipeline in core.stats: records its HINCRBY, HINCRBYFLOAT and EXPIRE calls."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[str | int | float] = []

    def _key(self, name: str) -> int:
        if name not in self.keys:
            self.keys.append(name)
        return self.keys.index(name) + 1

    def hincrby(self, name: str, field: str, amount: int = 1) -> None:
        self.args += ["i", self._key(name), field, int(amount)]

    def hincrbyfloat(self, name: str, field: str, amount: float = 1.0) -> None:
        self.args += ["f", self._key(name), field, repr(float(amount))]

    def expire(self, name: str, seconds: int) -> None:
        self.args += ["e", self._key(name), "", int(seconds)]


class TallyScript:
    """Sends a Tally as one command, on a pipeline (EVALSHA) or alone."""

    def __init__(self, client: aredis.Redis) -> None:
        self._script = QueuedScript(client, "tally")

    def queue(self, pipe: Any, tally: Tally) -> bool:
        """Queue the tally on a pipeline by EVALSHA; False (nothing queued) when it is empty."""
        if not tally.args:
            return False
        self._script.queue(pipe, tally.keys, tally.args)
        return True

    async def settle(self, reply: Any, tally: Tally) -> None:
        """Check a queued tally's reply; NOSCRIPT (Redis lost its scripts) runs it again, loading it."""
        await self._script.reply(reply, tally.keys, tally.args)
