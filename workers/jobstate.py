"""Worker-side job transitions (claim, finish, defer, renew) on the asyncio Redis client.

claim_with and finish_with carry other reads and writes on the same pipeline, so a job's
happy path costs two Redis round trips in all (the scripts ride on them as QueuedScripts).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis.asyncio as aredis

from config.settings import Settings
from core import keys, scripts, stats
from core.job import Result
from workers.queuedscript import QueuedScript
from workers.tally import Tally, TallyScript

# KEYS: leases   ARGV: lease_until, then triples job_key, job_id, token
# Extends the leases this worker still holds; returns the ids whose lease it has lost.
_RENEW = """
local lost = {}
for i = 2, #ARGV, 3 do
  local h = redis.call('HMGET', ARGV[i], 'state', 'lease')
  if h[1] == 'running' and h[2] == ARGV[i + 2] then
    redis.call('HSET', ARGV[i], 'lease_until', ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i + 1])
  else
    table.insert(lost, ARGV[i + 1])
  end
end
return lost
"""


class JobState:
    """Atomic job transitions for one worker process."""

    def __init__(self, client: aredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._claim = QueuedScript(client, scripts.CLAIM)
        self._finish = QueuedScript(client, scripts.FINISH)
        self._defer = client.register_script(scripts.DEFER)
        self._renew = client.register_script(_RENEW)
        self._tally = TallyScript(client)

    async def claim(self, job_id: str, dispatch: int, token: str, worker: str) -> str:
        return (await self.claim_with(job_id, dispatch, token, worker))[0]

    async def claim_with(
        self, job_id: str, dispatch: int, token: str, worker: str, also: Callable[[Any], object] | None = None
    ) -> tuple[str, list[Any]]:
        """Claim the job; also(pipe) queues more commands on the same round trip (their replies returned)."""
        now = time.time()
        keys_ = [keys.job(job_id), keys.LEASES]
        args: list[str | int | float] = [dispatch, token, worker, now, now + self.settings.lease_s, job_id]
        pipe = self.redis.pipeline(transaction=False)
        self._claim.queue(pipe, keys_, args)
        if also is not None:
            also(pipe)
        replies = await pipe.execute(raise_on_error=False)
        claimed = await self._claim.reply(replies[0], keys_, args)
        return _text(claimed), replies[1:]

    async def finish(
        self, result: Result, token: str, counters: Counter[str], health: dict[str, float]
    ) -> str:
        """Write the result if this worker still holds the job; counters go in the same round trip."""
        return (await self.finish_with(result, token, counters, health))[0]

    async def finish_with(
        self, result: Result, token: str, counters: Counter[str], health: dict[str, float],
        before: Callable[[Any], object] | None = None,
    ) -> tuple[str, list[Any]]:
        """finish(), with before(pipe) queueing more commands ahead of it; returns their replies too.

        Queued ahead, so a reader who sees the result also sees what they wrote (the cache fill).
        """
        pipe = self.redis.pipeline(transaction=False)
        if before is not None:
            before(pipe)
        ahead = len(pipe)
        keys_ = [keys.job(result.job_id), keys.LEASES, keys.PENDING, keys.STATS]
        args: list[str | int | float] = [
            token, result.model_dump_json(), result.source, int(result.degraded), time.time(),
            self.settings.result_ttl_s, result.job_id,
        ]
        self._finish.queue(pipe, keys_, args)
        tally = Tally()
        stats.add_job_outcome(tally, counters, health)
        tallied = self._tally.queue(pipe, tally)
        replies = await pipe.execute(raise_on_error=False)
        outcome = await self._finish.reply(replies[ahead], keys_, args)
        if tallied:
            await self._tally.settle(replies[ahead + 1], tally)
        return _text(outcome), replies[:ahead]

    async def finish_counters(self, counters: Counter[str], health: dict[str, float]) -> None:
        """Add a job's counters when it ended without a result (dead or deferred)."""
        tally = Tally()
        stats.add_job_outcome(tally, counters, health)
        pipe = self.redis.pipeline(transaction=False)
        if self._tally.queue(pipe, tally):
            await self._tally.settle((await pipe.execute(raise_on_error=False))[0], tally)

    async def defer(self, job_id: str, token: str, due: float, error: str) -> str:
        return str(
            await self._defer(
                keys=[keys.job(job_id), keys.LEASES, keys.RETRIES], args=[token, due, time.time(), job_id, error]
            )
        )

    async def renew(self, held: dict[str, str]) -> list[str]:
        """Extend every lease in held (job id -> token); returns the ids this worker no longer holds."""
        if not held:
            return []
        args: list[str | float] = [time.time() + self.settings.lease_s]
        for job_id, token in held.items():
            args += [keys.job(job_id), job_id, token]
        lost = await self._renew(keys=[keys.LEASES], args=args)
        return [str(x) for x in lost]


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
