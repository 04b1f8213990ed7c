"""`askq bench --pools`: the same bare Celery task on the thread pool and on gevent.

This is the measurement behind askq's pool choice: LLM calls are slow I/O, so the pool must
keep hundreds in flight; of the two I/O-concurrent pools, the faster one per CPU second wins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from askq.bench.workload import run_baseline
from askq.config.settings import load_settings
from askq.stack import Stack

POOLS = ("threads", "gevent")


def compare_pools(jobs: int = 3000, latency_s: float = 1.0, concurrency: int = 200, workers: int = 2,
                  rounds: int = 2, as_json: bool = False, var_dir: Path | None = None) -> int:
    """Run baseline (b) on each pool, alternating `rounds` times, and print the figures."""
    base = load_settings()
    rows: list[dict[str, Any]] = []
    with Stack(var_dir or base.var_dir / "bench-pools", env={"ASKQ_LOG_LEVEL": "warning"}) as stack:
        stack.start_redis()
        stack.start_sim(latency_s=latency_s)
        r = redis.Redis.from_url(stack.redis_url or "", decode_responses=True)
        for _ in range(rounds):
            for pool in POOLS:
                figures = run_baseline(stack, r, "bare", pool, workers, concurrency, jobs,
                                       max(120.0, jobs / 20), warmup=workers * concurrency)
                rows.append({"pool": pool, **figures.as_dict()})
        r.close()
    if as_json:
        print(json.dumps(rows, sort_keys=True))
        return 0
    table = Table("pool", "jobs/s", "p99 s", "CPU ms/job", "peak RSS MiB", title=f"bare task, L = {latency_s} s")
    for row in rows:
        table.add_row(row["pool"], str(row["jobs_per_s"]), str(row["p99_s"]), str(row["cpu_ms_per_job"]),
                      str(row["peak_rss_mb"]))
    Console().print(table)
    return 0
