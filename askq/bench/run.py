"""`askq bench`: askq against the textbook and the bare Celery worker on the same simulator.

One embedded stack (Redis, simulator with latency L) serves every design in turn. Each design's
workers are started, warmed up, then given a burst of distinct jobs; the clock runs from the
submission of the burst to the last answer. CPU per job comes from the kernel's accounting of
the worker processes (user + system, children included) over the timed burst.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from askq.bench.measure import ProcWatch, wait_until
from askq.bench.workload import Figures, askq_timings, figures, make_specs, run_baseline
from askq.config.settings import Settings, load_settings
from askq.core import keys
from askq.core.connection import connect
from askq.core.errors import BenchError
from askq.producers.client import Client
from askq.stack import Stack, default_providers

console = Console(stderr=True)


def askq_settings(stack: Stack) -> Settings:
    return load_settings(redis_url=stack.redis_url, var_dir=stack.var_dir,
                         providers=default_providers(stack.sim_url))


def run_askq(stack: Stack, client: Client, workers: int, concurrency: int, jobs: int, timeout_s: float,
             warmup: int | None = None) -> Figures:
    """Start askq workers, warm them up, time a burst of `jobs` jobs, stop them.

    The warm-up fills every slot once, so connection pools are full before the clock starts.
    """
    warmup = warmup if warmup is not None else workers * concurrency
    r = client.redis
    r.delete(keys.WORKERS)
    procs = [stack.start_worker(concurrency=concurrency, name=f"bench{i}") for i in range(workers)]
    try:
        if not wait_until(lambda: r.zcard(keys.WORKERS) >= workers, 60):
            raise BenchError(f"askq workers did not start; see {stack.var_dir}")
        client.submit_many([{"question": s.question} for s in make_specs(warmup, f"warm{time.time()}")])
        wait_until(lambda: client.store.pending_count() == 0, 60)
        watch = ProcWatch([p.pid for p in procs]).start()
        specs = make_specs(jobs, f"askq{time.time()}")
        t0 = time.time()
        ids = client.submit_many([{"question": s.question} for s in specs])
        wait_until(lambda: client.store.pending_count() == 0, timeout_s, 0.2)
        cpu_s = watch.stop()
        return figures("askq", workers, concurrency, jobs, t0, askq_timings(r, ids), cpu_s, watch.peak_rss_mb())
    finally:
        for proc in procs:
            stack.kill_worker(proc, 15)
            stack.workers.remove(proc)


def render(rows: list[Figures], ratios: dict[str, float], out: Console) -> None:
    table = Table(title="askq bench")
    for col in ("design", "workersxconc", "jobs", "jobs/s", "p50 s", "p95 s", "p99 s", "wait p99 s",
                "CPU ms/job", "peak RSS MiB/worker"):
        table.add_column(col, justify="right")
    for f in rows:
        table.add_row(f.name, f"{f.workers}x{f.concurrency}", str(f.done), str(f.jobs_per_s), str(f.p50_s),
                      str(f.p95_s), str(f.p99_s), str(f.wait_p99_s), str(f.cpu_ms_per_job), str(f.peak_rss_mb))
    out.print(table)
    for name, value in ratios.items():
        out.print(f"{name}: {value}")


def run_bench(jobs: int = 3000, latency_s: float = 1.0, concurrency: int = 200, workers: int = 2,
              textbook_jobs: int = 40, skip_baselines: bool = False, submit_only: bool = False,
              plot: Path | None = None, as_json: bool = False, var_dir: Path | None = None,
              extra_env: dict[str, str] | None = None, durability: str = "relaxed") -> int:
    base = load_settings()
    with Stack(var_dir or base.var_dir / "bench", env={"ASKQ_LOG_LEVEL": "warning", **(extra_env or {})}) as stack:
        stack.start_redis()
        if submit_only:
            from askq.bench.submit import measure_submit

            out = measure_submit(stack, durability=durability)
            print(json.dumps(out, sort_keys=True) if as_json else
                  f"one by one: {out['one_by_one_jobs_per_s']} jobs/s, bulk: {out['bulk_jobs_per_s']} jobs/s")
            return 0
        stack.start_sim(latency_s=latency_s)
        client = Client(askq_settings(stack), connect(base, stack.redis_url))
        timeout = max(120.0, jobs / 20)
        result: dict[str, Any] = {"latency_s": latency_s, "cores": os.cpu_count()}
        console.print(f"askq: {jobs} jobs, {workers} workers x {concurrency}, L = {latency_s} s ...")
        mine = run_askq(stack, client, workers, concurrency, jobs, timeout)
        rows = [mine]
        ratios: dict[str, float] = {}
        if not skip_baselines:
            r = redis.Redis.from_url(stack.redis_url or "", decode_responses=True)
            console.print(f"baseline (b) bare: {jobs} jobs ...")
            bare = run_baseline(stack, r, "bare", "threads", workers, concurrency, jobs, timeout,
                                warmup=workers * concurrency)
            cores = os.cpu_count() or 1
            console.print(f"baseline (a) textbook: {textbook_jobs} jobs ...")
            textbook = run_baseline(stack, r, "textbook", "prefork", 1, cores, textbook_jobs,
                                    textbook_jobs * latency_s * 3 + 60, warmup=2 * cores)
            rows += [bare, textbook]
            ratios = {"ratio_vs_bare": round(mine.jobs_per_s / max(bare.jobs_per_s, 1e-9), 2),
                      "ratio_vs_textbook": round(mine.jobs_per_s / max(textbook.jobs_per_s, 1e-9), 1)}
            result |= {"bare": bare.as_dict(), "textbook": textbook.as_dict()}
            r.close()
        if plot is not None:
            from askq.bench.plot import sweep

            result["sweep"] = sweep(stack, client, workers, plot, jobs=min(jobs, 1000))
        client.close()
    result |= {"jobs_per_s": mine.jobs_per_s, "p99_s": mine.p99_s, "cpu_ms_per_job": mine.cpu_ms_per_job,
               "askq": mine.as_dict(), **ratios}
    # With --json the table still goes to stderr, so one run gives both.
    render(rows, ratios, Console(width=160, stderr=as_json))
    if as_json:
        print(json.dumps(result, sort_keys=True))
    return 0
