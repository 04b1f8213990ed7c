"""Worker-side job transitions (claim, finish, defer, renew) on the asyncio Redis client."""

from __future__ import annotations

import time
from collections import Counter

import redis.asyncio as aredis

from config.settings import Settings
from core import keys, scripts, stats
from core.job import Result

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
        self._claim = client.register_script(scripts.CLAIM)
        self._finish = client.register_script(scripts.FINISH)
        self._defer = client.register_script(scripts.DEFER)
        self._renew = client.register_script(_RENEW)

    async def claim(self, job_id: str, dispatch: int, token: str, worker: str) -> str:
        now = time.time()
        return str(
            await self._claim(
                keys=[keys.job(job_id), keys.LEASES],
                args=[dispatch, token, worker, now, now + self.settings.lease_s, job_id],
            )
        )

    async def finish(
        self, result: Result, token: str, counters: Counter[str], health: dict[str, float]
    ) -> str:
        """Write the result if this worker still holds the job; counters go in the same round trip."""
        pipe = self.redis.pipeline(transaction=False)
        await self._finish(
            keys=[keys.job(result.job_id), keys.LEASES, keys.PENDING, keys.STATS],
            args=[token, result.model_dump_json(), result.source, int(result.degraded), time.time(),
                  self.settings.result_ttl_s, result.job_id],
            client=pipe,
        )
        stats.add_job_outcome(pipe, counters, health)
        replies = await pipe.execute()
        return str(replies[0])

    async def finish_counters(self, counters: Counter[str], health: dict[str, float]) -> None:
        """Add a job's counters when it ended without a result (dead or deferred)."""
        pipe = self.redis.pipeline(transaction=False)
        stats.add_job_outcome(pipe, counters, health)
        await pipe.execute()

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
