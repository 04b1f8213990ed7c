"""Counters every worker adds to and `askq stats`, health and metrics read."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis

from core import keys

HEALTH_BUCKET_S = 10
HEALTH_TTL_S = 3600


def health_bucket(now: float | None = None) -> int:
    return int((now if now is not None else time.time()) // HEALTH_BUCKET_S)


def add_job_outcome(pipe: Any, counters: Counter[str], health: dict[str, float]) -> None:
    """Queue the HINCRBY commands for one finished job on a (sync or async) pipeline."""
    for name, value in counters.items():
        if value:
            pipe.hincrby(keys.STATS, name, int(value))
    bucket = keys.health_bucket(health_bucket())
    for field, amount in health.items():
        if amount:
            pipe.hincrbyfloat(bucket, field, float(amount))
    pipe.expire(bucket, HEALTH_TTL_S)


def read_counters(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(keys.STATS)
    return {str(k): int(float(v)) for k, v in raw.items()}


def read_health_window(client: redis.Redis, window_s: float) -> dict[str, float]:
    """Sum of the health buckets covering the last window_s seconds."""
    now = health_bucket()
    first = health_bucket(time.time() - window_s)
    pipe = client.pipeline(transaction=False)
    for bucket in range(first, now + 1):
        pipe.hgetall(keys.health_bucket(bucket))
    total: dict[str, float] = {}
    for fields in pipe.execute():
        for name, value in fields.items():
            total[str(name)] = total.get(str(name), 0.0) + float(value)
    return total
