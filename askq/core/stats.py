"""Counters every worker adds to and `askq stats`, health and metrics read."""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal, NamedTuple

import redis

from askq.core import clock, keys

HEALTH_BUCKET_S = 10
HEALTH_TTL_S = 3600


def health_bucket(now: float | None = None) -> int:
    return int((now if now is not None else clock.now()) // HEALTH_BUCKET_S)


class Increment(NamedTuple):
    """One addition a finished job makes: HINCRBY (op "i"), HINCRBYFLOAT ("f"), or EXPIRE ("e",
    amount in seconds, no field)."""

    op: Literal["i", "f", "e"]
    key: str
    field: str
    amount: int | float


def job_outcome(counts: Counter[str], health: dict[str, float]) -> list[Increment]:
    """What one finished job adds: its counters, its health bucket and, when answered, its latencies."""
    out = [Increment("i", keys.STATS, name, int(value)) for name, value in counts.items() if value]
    bucket = keys.health_bucket(health_bucket())
    out += [Increment("f", bucket, name, float(amount)) for name, amount in health.items() if amount]
    out.append(Increment("e", bucket, "", HEALTH_TTL_S))
    if "latency_sum_s" in health and "run_sum_s" in health:
        # One answered job: its end-to-end and run times; the queue wait is what lies between.
        end_to_end, run = float(health["latency_sum_s"]), float(health["run_sum_s"])
        out += latencies({"queue_wait": max(0.0, end_to_end - run), "run": run, "end_to_end": end_to_end})
    return out


# Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LATENCY_NAMES = ("queue_wait", "run", "end_to_end")


def bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def latencies(observations: dict[str, float]) -> list[Increment]:
    """One observation per histogram: the bucket it falls in, the sum and the count."""
    out: list[Increment] = []
    for name, seconds in observations.items():
        bound = next((b for b in LATENCY_BUCKETS if seconds <= b), float("inf"))
        out += [Increment("i", keys.LATENCY, f"{name}:{bucket_label(bound)}", 1),
                Increment("f", keys.LATENCY, f"{name}:sum", seconds),
                Increment("i", keys.LATENCY, f"{name}:count", 1)]
    return out


def read_counters(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(keys.STATS)
    return {str(k): int(float(v)) for k, v in raw.items()}


def read_health_window(client: redis.Redis, window_s: float) -> dict[str, float]:
    """Sum of the health buckets covering the last window_s seconds."""
    now_s = clock.read(client)
    now = health_bucket(now_s)
    first = health_bucket(now_s - window_s)
    pipe = client.pipeline(transaction=False)
    for bucket in range(first, now + 1):
        pipe.hgetall(keys.health_bucket(bucket))
    total: dict[str, float] = {}
    for fields in pipe.execute():
        for name, value in fields.items():
            total[str(name)] = total.get(str(name), 0.0) + float(value)
    return total


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
