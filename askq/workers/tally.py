"""A job's counters as one Redis command: core.stats' increments, batched in Lua.

core.stats.job_outcome lists about twenty small increments per finished job (counters,
health bucket, latency histograms). On the worker's hot path packing and parsing each as
its own command costs more CPU than Redis spends on all of them, so the worker sends them
as one EVALSHA of a script that applies them. core.stats stays the one place that decides
which counters a job adds to.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aredis

from askq.core.scripts import QueuedScript, ScriptCall
from askq.core.stats import Increment


class TallyScript:
    """Packs a job's increments into one run of the tally script."""

    def __init__(self, client: aredis.Redis) -> None:
        self._script = QueuedScript(client, "tally")

    def call(self, increments: Iterable[Increment]) -> ScriptCall | None:
        """The increments as one script run (queued with the job's result write); None when empty."""
        index: dict[str, int] = {}
        args: list[str | int | float] = []
        for op, key, field, amount in increments:
            at = index.setdefault(key, len(index) + 1)
            args += [op, at, field, repr(float(amount)) if op == "f" else int(amount)]
        if not args:
            return None
        return self._script.call(list(index), args)
