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

from askq.config.settings import Settings
from askq.core import keys, scripts, stats
from askq.core.job import Result
from askq.core.scripts import QueuedScript
from askq.workers.tally import Tally, TallyScript

Claimed = tuple[str, str | None, list[Any]]


class JobState:
    """Atomic job transitions for one worker process."""

    def __init__(self, client: aredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._claim = QueuedScript(client, "claim")
        self._finish = QueuedScript(client, "finish")
        self._defer = scripts.register(client, "defer")
        self._expire = scripts.register(client, "expire")
        self._renew = scripts.register(client, "renew")
        self._tally = TallyScript(client)

    async def claim(self, job_id: str, dispatch: int, token: str, worker: str) -> str:
        return (await self.claim_with(job_id, dispatch, token, worker))[0]

    async def claim_with(
        self, job_id: str, dispatch: int, token: str, worker: str, also: Callable[[Any], object] | None = None,
        digest: str = "", adopt: bool = False,
    ) -> Claimed:
        """Claim the job; also(pipe) queues more commands on the same round trip (their replies returned).

        digest: sha1 of the message's payload text; when the stored payload differs, it is
        returned (second item) and the caller answers that one. adopt: token is a run of this
        process still going, taking its lease back (see lua/claim.lua).
        """
        now = time.time()
        keys_ = [keys.job(job_id), keys.LEASES]
        args: list[str | int | float] = [dispatch, token, worker, now, now + self.settings.lease_s, job_id,
                                         digest, "1" if adopt else ""]
        pipe = self.redis.pipeline(transaction=False)
        self._claim.queue(pipe, keys_, args)
        if also is not None:
            also(pipe)
        replies = await pipe.execute(raise_on_error=False)
        claimed = await self._claim.reply(replies[0], keys_, args)
        stored = _text(claimed[1]) if len(claimed) > 1 else None
        return _text(claimed[0]), stored, replies[1:]

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
        keys_ = [keys.job(result.job_id), keys.LEASES, keys.PENDING, keys.STATS, keys.EXPIRIES]
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

    async def expire(self, job_id: str) -> str:
        """End a job its claim found past its expires_at (lua/expire.lua)."""
        return _text(await self._expire(keys=expire_keys(job_id), args=expire_args(job_id, self.settings)))

    async def renew(self, held: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Extend every lease in held (job id, token); returns the runs that no longer hold theirs,
        and the runs whose job was cancelled."""
        if not held:
            return [], []
        args: list[str | float] = [time.time() + self.settings.lease_s]
        for job_id, token in held:
            args += [keys.job(job_id), job_id, token]
        lost, cancelled = await self._renew(keys=[keys.LEASES], args=args)
        return [held[int(i) - 1] for i in lost], [held[int(i) - 1] for i in cancelled]


def expire_keys(job_id: str) -> list[str]:
    """The KEYS of lua/expire.lua for a job."""
    return [keys.job(job_id), keys.PENDING, keys.RETRIES, keys.PROBATION, keys.EXPIRIES, keys.STATS,
            keys.health_bucket(stats.health_bucket())]


def expire_args(job_id: str, settings: Settings) -> list[str | float]:
    return [job_id, time.time(), settings.result_ttl_s, stats.HEALTH_TTL_S]


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
