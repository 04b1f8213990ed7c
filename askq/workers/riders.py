"""What rides on a job's own two round trips: the ladder's reads on its claim, its bookkeeping on its result write.

The claim (askq/workers/transitions.py) carries the Reads the ladder needs before its first
tier (the fast-path cache lookup, the first tier's breaker state) and hands them to the ladder
as Prefetched. The ladder hands back a provider answer's Bookkeeping (breaker success, cache
fill, token correction) as a value the result write carries. Each is queued on the pipeline of
the write it rides on and its replies are settled after, so a job's happy path costs two round
trips besides the LLM call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio as aredis
import structlog

from askq.core.scripts import ScriptCall
from askq.workers.breaker import recorded
from askq.workers.cache import AnswerCache, CachedAnswer

log = structlog.get_logger("askq.ladder")


class Write(Protocol):
    """A write with no reply worth reading, queued on a pipeline."""

    def queue(self, pipe: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Prefetched:
    """What the ladder reads before its first tier: the first tier's breaker state and a cache hit."""

    first_state: str
    hit: CachedAnswer | None


@dataclass(frozen=True, slots=True)
class Reads:
    """The ladder's reads for one job, to queue on the job's claim."""

    breaker_key: str
    cache_key: str | None  # None: no fast-path lookup

    def queue(self, pipe: Any) -> None:
        if self.cache_key is not None:
            pipe.get(self.cache_key)
        pipe.hget(self.breaker_key, "state")

    def parse(self, replies: list[Any]) -> Prefetched:
        """The replies of queue(), in order; an error reply raises it."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        state = replies[-1]
        state = state.decode() if isinstance(state, bytes) else str(state or "closed")
        return Prefetched(state, AnswerCache.parse(replies[0]) if self.cache_key is not None else None)

    async def fetch(self, client: aredis.Redis) -> Prefetched:
        """The reads on their own round trip (when the claim's were for another payload)."""
        pipe = client.pipeline(transaction=False)
        self.queue(pipe)
        return self.parse(await pipe.execute(raise_on_error=False))


@dataclass(frozen=True, slots=True)
class Bookkeeping:
    """A provider answer's writes, carried by the job's result write (queued ahead of it, so a
    reader who sees the result also sees the cache fill)."""

    provider: str
    breaker: ScriptCall  # the breaker's record of the success; its reply says whether it closed
    writes: tuple[Write, ...]  # cache fill, token correction

    def queue(self, pipe: Any) -> None:
        self.breaker.queue(pipe)
        for write in self.writes:
            write.queue(pipe)

    async def settle(self, replies: list[Any]) -> None:
        """Read the replies of queue() (the breaker's first; the other writes need none)."""
        try:
            state = recorded(await self.breaker.settle(replies[0]))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.dropped(exc)
            return
        if state.changed:
            log.warning("breaker_closed", provider=self.provider)

    def dropped(self, exc: Exception) -> None:
        """Bookkeeping only: the answer is good and the result write rides out the outage."""
        log.warning("success_bookkeeping_failed", provider=self.provider, error=str(exc))
