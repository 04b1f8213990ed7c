"""Worker-side job transitions (claim, finish, defer, renew) on the asyncio Redis client.

The claim carries the ladder's reads and the result write its bookkeeping and the job's
counters, on the same pipeline (askq/workers/riders.py), so a job's happy path costs two
Redis round trips in all (the scripts ride on them by EVALSHA: QueuedScript in askq/core/scripts.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from askq.config.settings import Settings
from askq.core import clock, keys, scripts, stats
from askq.core.job import Result
from askq.core.scripts import QueuedScript
from askq.workers.riders import Bookkeeping, Prefetched, Reads
from askq.workers.tally import TallyScript


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim found: its outcome (ok, or why not), the stored payload when the message's
    copy differs, and the ladder's reads when it carried them and got the job."""

    outcome: str
    stored: str | None = None
    prefetched: Prefetched | None = None


class JobTransitions:
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

    async def claim(
        self, job_id: str, dispatch: int, token: str, worker: str, digest: str = "", reads: Reads | None = None,
        adopt: bool = False,
    ) -> Claimed:
        """Claim the job, with the ladder's reads on the same round trip.

        digest: sha1 of the message's payload text; when the stored payload differs, it is
        returned and the caller answers that one. adopt: token is a run of this process still
        going, taking its lease back (see lua/claim.lua).
        """
        now = await clock.aread(self.redis)
        claim = self._claim.call([keys.job(job_id), keys.LEASES],
                                 [dispatch, token, worker, now, now + self.settings.lease_s, job_id, digest,
                                  "1" if adopt else ""])
        pipe = self.redis.pipeline(transaction=False)
        claim.queue(pipe)
        if reads is not None:
            reads.queue(pipe)
        replies = await pipe.execute(raise_on_error=False)
        claimed = await claim.settle(replies[0])
        outcome = _text(claimed[0])
        stored = _text(claimed[1]) if len(claimed) > 1 else None
        prefetched = reads.parse(replies[1:]) if reads is not None and outcome == "ok" else None
        return Claimed(outcome, stored, prefetched)

    async def finish(
        self, result: Result, token: str, counts: Counter[str], health: dict[str, float],
        bookkeeping: Bookkeeping | None = None,
    ) -> str:
        """Write the result if this run still holds the job, carrying the ladder's bookkeeping
        (queued ahead, so a reader who sees the result also sees the cache fill) and the job's
        counters, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        if bookkeeping is not None:
            bookkeeping.queue(pipe)
        ahead = len(pipe)
        finish = self._finish.call(
            [keys.job(result.job_id), keys.LEASES, keys.PENDING, keys.STATS, keys.EXPIRIES],
            [token, result.model_dump_json(), result.source, int(result.degraded), clock.now(),
             self.settings.result_ttl_s, result.job_id])
        finish.queue(pipe)
        tally = self._tally.call(stats.job_outcome(counts, health))
        if tally is not None:
            tally.queue(pipe)
        replies = await pipe.execute(raise_on_error=False)
        outcome = await finish.settle(replies[ahead])
        if tally is not None:
            await tally.settle(replies[ahead + 1])
        if bookkeeping is not None:
            await bookkeeping.settle(replies[:ahead])
        return _text(outcome)

    async def add_counts(self, counts: Counter[str], health: dict[str, float]) -> None:
        """Add a job's counters when it ended without a result (dead, deferred or cancelled)."""
        tally = self._tally.call(stats.job_outcome(counts, health))
        if tally is not None:
            await tally.run()

    async def defer(self, job_id: str, token: str, due: float, error: str) -> str:
        return str(
            await self._defer(
                keys=[keys.job(job_id), keys.LEASES, keys.RETRIES], args=[token, due, clock.now(), job_id, error]
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
        args: list[str | float] = [await clock.aread(self.redis) + self.settings.lease_s]
        for job_id, token in held:
            args += [keys.job(job_id), job_id, token]
        lost, cancelled = await self._renew(keys=[keys.LEASES], args=args)
        return [held[int(i) - 1] for i in lost], [held[int(i) - 1] for i in cancelled]


def expire_keys(job_id: str) -> list[str]:
    """The KEYS of lua/expire.lua for a job."""
    return [keys.job(job_id), keys.PENDING, keys.RETRIES, keys.PROBATION, keys.EXPIRIES, keys.STATS,
            keys.health_bucket(stats.health_bucket())]


def expire_args(job_id: str, settings: Settings) -> list[str | float]:
    return [job_id, clock.now(), settings.result_ttl_s, stats.HEALTH_TTL_S]


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
