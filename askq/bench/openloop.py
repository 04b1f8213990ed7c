"""`askq bench --rate R`: open-loop latency, jobs arriving at a fixed mean rate (Poisson), not in a burst.

A burst measures capacity; users feel latency at a load below it. Here one producer submits
jobs one by one at exponentially spaced moments (mean rate R) to askq's already warm workers,
and each job's figures come from its own record: queue wait = started - created, askq's
overhead = (finished - created) - L, the time the simulator spends on the call (its fixed
latency; the bench runs it without jitter). The overhead includes the queue wait: it is all the
time a job spends in askq beyond the provider's answer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from askq.bench.measure import ProcWatch
from askq.bench.workload import Design, make_specs
from askq.core.stats import percentile
from askq.errors import BenchError

# Long enough for a stable p99, short enough to keep a run bounded.
TARGET_S = 20.0
MIN_JOBS = 200
# A rate point takes at least MIN_JOBS / rate seconds: below this rate it would run past half a
# minute (0.001 jobs/s: 55 hours), so it is refused rather than left to run.
MAX_POINT_S = 30.0
MIN_RATE = round(MIN_JOBS / MAX_POINT_S, 2)


def parse_rate(text: str, capacity: float | None = None) -> float:
    """Jobs/s from "120" or "50%" (of capacity); BenchError saying what is wrong otherwise."""
    raw = text.strip()
    share = raw.endswith("%")
    try:
        value = float(raw[:-1] if share else raw)
    except ValueError:
        raise BenchError(f"--rate {text!r}: expected jobs/s (e.g. 120) or a share of capacity (e.g. 50%)") from None
    if not value > 0 or value != value or value == float("inf"):
        raise BenchError(f"--rate {text!r}: must be a positive number")
    if share and value > 200:
        raise BenchError(f"--rate {text!r}: a share of capacity over 200% only measures a growing queue")
    if share and capacity is None:
        return 0.0  # known once the capacity is measured; parse again with it
    rate = value / 100 * capacity if share and capacity is not None else value
    if rate < MIN_RATE:
        of = f" ({rate:g} jobs/s of a measured capacity of {capacity:g})" if share else ""
        raise BenchError(f"--rate {text!r}{of}: at least {MIN_RATE:g} jobs/s ({MIN_JOBS} jobs must arrive "
                         f"within {MAX_POINT_S:g} s)")
    return rate


def arrivals(rate: float, count: int, rng: random.Random) -> list[float]:
    """Offsets (s from the start) of `count` Poisson arrivals at mean `rate` per second."""
    at, out = 0.0, []
    for _ in range(count):
        at += rng.expovariate(rate)
        out.append(at)
    return out


def one_rate(design: Design, rate: float, count: int, latency_s: float, seed: int = 7) -> dict[str, Any]:
    """Submit `count` jobs at Poisson moments of mean `rate`, wait for them, return the figures."""
    specs = make_specs(count, f"open{rate}-{time.time()}")
    plan = arrivals(rate, count, random.Random(seed))
    watch = ProcWatch([p.pid for p in design.procs]).start()
    ids = []
    lag = 0.0
    t0 = time.perf_counter()
    for spec, at in zip(specs, plan, strict=True):
        delay = at - (time.perf_counter() - t0)
        if delay > 0:
            time.sleep(delay)
        else:
            lag = max(lag, -delay)
        ids.append(design.submit_one(spec))
    sent_s = time.perf_counter() - t0
    design.wait_done(count, max(120.0, count / max(rate, 1) * 3))
    cpu_s = watch.stop()
    timings = design.timings(ids)
    e2e = [f - c for c, _, f in timings]
    wait = [max(0.0, s - c) for c, s, _ in timings]
    overhead = [max(0.0, x - latency_s) for x in e2e]

    def ms(values: list[float], q: float) -> float:
        return round(percentile(values, q) * 1000, 1)

    return {
        "rate_jobs_per_s": round(rate, 1), "offered_jobs_per_s": round(count / sent_s, 1), "jobs": count,
        "done": len(timings), "producer_lag_max_ms": round(lag * 1000, 1),
        "wait_p50_ms": ms(wait, 50), "wait_p95_ms": ms(wait, 95), "wait_p99_ms": ms(wait, 99),
        "overhead_p50_ms": ms(overhead, 50), "overhead_p95_ms": ms(overhead, 95), "overhead_p99_ms": ms(overhead, 99),
        "e2e_p50_ms": ms(e2e, 50), "e2e_p99_ms": ms(e2e, 99),
        "cpu_ms_per_job": round(cpu_s * 1000 / len(timings), 2) if timings else 0.0,
    }


def open_loop(design: Design, rates: list[str], capacity: float, latency_s: float, max_jobs: int,
              say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every --rate in turn on askq's warm workers; capacity is askq's median jobs/s of the same run."""
    points = []
    for text in rates:
        rate = parse_rate(text, capacity)
        count = max(MIN_JOBS, min(max_jobs, int(rate * TARGET_S)))
        say(f"open loop: {count} jobs at {rate:.1f} jobs/s ({rate / capacity:.0%} of {capacity} jobs/s) ...")
        point = one_rate(design, rate, count, latency_s)
        point |= {"rate": text, "capacity_jobs_per_s": capacity,
                  "offered_load_ratio": round(point["offered_jobs_per_s"] / capacity, 3) if capacity else 0.0}
        say(f"  queue wait p50/p95/p99 {point['wait_p50_ms']}/{point['wait_p95_ms']}/{point['wait_p99_ms']} ms, "
            f"overhead p50/p95/p99 {point['overhead_p50_ms']}/{point['overhead_p95_ms']}/{point['overhead_p99_ms']} ms")
        points.append(point)
    return points
