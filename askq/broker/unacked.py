"""Kombu's unacked bookkeeping, read for the reaper (askq/workers/reaper.py).

Kombu's Redis QoS keeps every message delivered to a consumer and not yet acked in a hash
(delivery tag -> JSON [envelope, exchange, routing key]) with a ZSET of delivery times
(askq/broker/keys.py). It restores an entry only after `visibility_timeout` (an hour by
default); the reaper settles askq's own entries much sooner, deciding from the job's state.
This module is the reading half: which entries are old, what job and dispatch each one holds.
The writing half runs in the reaper's scripts (askq/core/scripts.py RECOVER, RESTORE_SUBMISSION),
given these key names.
"""

from __future__ import annotations

from typing import Any, cast

import redis

from askq.broker import keys
from askq.broker.envelope import HeldSubmission, locate, locate_submission


def queue_stale(pipe: Any, older_than: float, limit: int) -> None:
    """Add to a pipeline: the delivery tags of entries delivered before `older_than` (epoch s)."""
    pipe.zrangebyscore(keys.UNACKED_INDEX, "-inf", older_than, start=0, num=limit)


def held(client: redis.Redis, tags: list[str]) -> list[str | None]:
    """The stored entry of each delivery tag; None where it was acked meanwhile."""
    return [None if raw is None else str(raw) for raw in client.hmget(keys.UNACKED, tags)]


def held_submission(client: redis.Redis, tag: str) -> HeldSubmission | None:
    """The submission from another service held under a delivery tag, if that is what it holds."""
    raw = client.hget(keys.UNACKED, tag)
    return locate_submission(str(raw)) if raw is not None else None


def forget(client: redis.Redis, tag: str) -> None:
    """Drop a delivery tag from the index (its entry is gone, or is not one askq can settle)."""
    client.zrem(keys.UNACKED_INDEX, tag)


def held_jobs(client: redis.Redis) -> set[tuple[str, int]]:
    """Job id and dispatch of every askq message held unacked right now (by any worker)."""
    found = (locate(raw) for raw in cast(list[str], client.hvals(keys.UNACKED)))
    return {f for f in found if f is not None}


def settle_keys(job_key: str, queue: str) -> list[str]:
    """KEYS of the scripts that settle an abandoned entry: job, queue, unacked, unacked_index."""
    return [job_key, queue, keys.UNACKED, keys.UNACKED_INDEX]
