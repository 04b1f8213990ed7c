"""Prometheus metrics for the whole deployment, computed from Redis at scrape time.

Every worker process adds to the same Redis counters, histograms and heartbeats, so one
scrape of any API process sees the cluster's totals: nothing is kept in process memory,
nothing is lost when a worker dies, and no multiprocess directory is needed. Secrets never
reach a label: labels are provider names, error classes, tiers, reasons and worker names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from askq.config.settings import Settings
from askq.core import clock, counters, keys, stats
from askq.core.liveness import list_workers
from askq.core.version import build_info

# Breaker states as one gauge value each: easy to alert on (> 0 means not closed).
BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
# Running jobs read per scrape for the oldest-job gauge; more than this is itself the alarm.
MAX_RUNNING_SCAN = 10000


class RedisCollector(Collector):
    """Reads askq's state from Redis on every collect()."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily("askq_build", "askq's version and the versions it runs on (value 1)",
                               value=build_info())
        yield from self._counters(stats.read_counters(self.redis))
        yield from self._histograms()
        yield from self._queue()
        yield from self._breakers()
        yield from self._workers()

    def _counters(self, values: dict[str, int]) -> Iterator[Metric]:
        """Each field of the stats hash under its declared counter (askq/core/counters.py)."""
        families: dict[str, CounterMetricFamily] = {}
        other = CounterMetricFamily(counters.EVENTS_METRIC, "other askq counters, by name", labels=["name"])
        for field, value in sorted(values.items()):
            declared = counters.parse(field)
            metric = declared[0].metric if declared is not None else None
            if declared is None or metric is None:
                other.add_metric([field], value)
                continue
            count, labels = declared
            if metric not in families:
                families[metric] = CounterMetricFamily(metric, count.help, labels=list(count.labels))
            families[metric].add_metric(labels, value)
        for count in counters.ALL:
            if count.metric is not None and not count.labels:
                families.setdefault(count.metric, CounterMetricFamily(count.metric, count.help, value=0))
        yield from families.values()
        yield other

    def _histograms(self) -> Iterator[Metric]:
        raw = cast(dict[str, str], self.redis.hgetall(keys.LATENCY))
        docs = {
            "queue_wait": "seconds from submission (or requeue) to the start of the run that answered",
            "run": "seconds the answering run took",
            "end_to_end": "seconds from submission to the stored result",
        }
        for name in stats.LATENCY_NAMES:
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound in (*stats.LATENCY_BUCKETS, float("inf")):
                label = stats.bucket_label(bound)
                cumulative += float(raw.get(f"{name}:{label}", 0))
                buckets.append((label, cumulative))
            yield HistogramMetricFamily(
                f"askq_job_{name}_seconds", docs[name], buckets=buckets, sum_value=float(raw.get(f"{name}:sum", 0))
            )

    def _queue(self) -> Iterator[Metric]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.settings.queue)
        pipe.zcard(keys.PENDING)
        pipe.zcard(keys.LEASES)
        pipe.zcard(keys.RETRIES)
        pipe.zcard(keys.DLQ_INDEX)
        pipe.zrange(keys.LEASES, 0, MAX_RUNNING_SCAN - 1)
        pipe.zrange(keys.PENDING, 0, 0, withscores=True)  # scored by creation (or replay) time
        depth, pending, running, retrying, dead_letters, leased, first = pipe.execute()
        yield GaugeMetricFamily("askq_queue_depth", "messages waiting on the broker queue", value=depth)
        yield GaugeMetricFamily("askq_jobs_pending", "jobs not yet ended (succeeded, dead, cancelled or expired)",
                                value=pending)
        yield GaugeMetricFamily("askq_jobs_running", "jobs held by a worker under a lease", value=running)
        yield GaugeMetricFamily("askq_jobs_retrying", "jobs parked for a durable retry", value=retrying)
        yield GaugeMetricFamily("askq_dead_letter_records", "dead-letter records kept for replay", value=dead_letters)
        # A queue that does not move shows here whatever its depth: no worker, a stuck retry, a backlog.
        yield GaugeMetricFamily("askq_oldest_pending_job_age_seconds", "how long the oldest unfinished job has existed",
                                value=max(0.0, clock.read(self.redis) - float(first[0][1])) if first else 0.0)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in leased:
            pipe.hget(keys.job(str(job_id)), "started")
        starts = [float(s) for s in pipe.execute() if s] if leased else []
        oldest = clock.read(self.redis) - min(starts) if starts else 0.0
        yield GaugeMetricFamily(
            "askq_oldest_running_job_age_seconds", "how long the longest-running job has run", value=max(0.0, oldest)
        )

    def _breakers(self) -> Iterator[Metric]:
        names = [p.name for p in self.settings.providers]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(keys.breaker(name), "state")
        gauge = GaugeMetricFamily(
            "askq_breaker_state", "circuit breaker per provider: 0 closed, 1 half-open, 2 open", labels=["provider"]
        )
        for name, state in zip(names, pipe.execute(), strict=True):
            gauge.add_metric([name], BREAKER_VALUES.get(str(state or "closed"), 0.0))
        yield gauge

    def _workers(self) -> Iterator[Metric]:
        workers = list_workers(self.redis, self.settings)
        age = GaugeMetricFamily("askq_worker_heartbeat_age_seconds", "seconds since a worker's last heartbeat",
                                labels=["worker"])
        inflight = GaugeMetricFamily("askq_worker_inflight", "jobs a worker is running", labels=["worker"])
        for w in workers:
            age.add_metric([w.name], w.heartbeat_age_s)
            inflight.add_metric([w.name], w.inflight)
        by_state = GaugeMetricFamily("askq_workers", "workers by liveness state", labels=["state"])
        for state in ("alive", "stalled", "dead"):
            by_state.add_metric([state], sum(1 for w in workers if w.state == state))
        yield age
        yield inflight
        yield by_state


def registry_for(client: redis.Redis, settings: Settings) -> CollectorRegistry:
    """A registry holding only askq's Redis-backed metrics (no per-process defaults)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(client, settings))
    return registry
