"""Jobs and worker processes for one benchmark run: askq's workers or a baseline's, on one stack."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import redis

from askq.bench.baselines import DONE_KEY, READY_KEY
from askq.bench.measure import ProcWatch, wait_until
from askq.core import keys, message
from askq.core.job import JobSpec
from askq.core.stats import percentile
from askq.errors import BenchError
from askq.stack import Stack

BASELINE_QUEUE = "bench"


def questions() -> list[str]:
    path = resources.files("askq") / "data" / "questions.jsonl"
    return [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]


def make_specs(count: int, tag: str) -> list[JobSpec]:
    """count distinct jobs: the bundled questions, numbered so the answer cache never hits."""
    base = questions()
    return [JobSpec.new(f"{base[i % len(base)]} (ticket {tag}-{i})", [], None, None) for i in range(count)]


@dataclass
class Figures:
    """What one design achieved on one batch."""

    name: str
    workers: int
    concurrency: int
    jobs: int
    done: int
    wall_s: float
    jobs_per_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    wait_p50_s: float
    wait_p99_s: float
    cpu_ms_per_job: float
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def figures(name: str, workers: int, concurrency: int, jobs: int, t0: float, timings: list[tuple[float, float, float]],
            cpu_s: float, rss_mb: float) -> Figures:
    """Figures from (created, started, finished) per finished job; the clock starts at submission."""
    done = len(timings)
    wall = max((f for _, _, f in timings), default=t0) - t0
    e2e = [f - c for c, _, f in timings]
    wait = [max(0.0, s - c) for c, s, _ in timings]
    return Figures(
        name=name, workers=workers, concurrency=concurrency, jobs=jobs, done=done, wall_s=round(wall, 2),
        jobs_per_s=round(done / wall, 1) if wall > 0 else 0.0,
        p50_s=round(percentile(e2e, 50), 3), p95_s=round(percentile(e2e, 95), 3),
        p99_s=round(percentile(e2e, 99), 3), wait_p50_s=round(percentile(wait, 50), 3),
        wait_p99_s=round(percentile(wait, 99), 3),
        cpu_ms_per_job=round(cpu_s * 1000 / done, 2) if done else 0.0, peak_rss_mb=rss_mb,
    )


def push_baseline(r: redis.Redis, task: str, specs: list[JobSpec]) -> None:
    """Enqueue jobs for a baseline: askq's own message, under the baseline's task name, pipelined."""
    pipe = r.pipeline(transaction=False)
    for spec in specs:
        envelope = json.loads(message.build(BASELINE_QUEUE, spec.model_dump(mode="json"), dispatch=1))
        envelope["headers"]["task"] = task
        pipe.lpush(BASELINE_QUEUE, json.dumps(envelope))
    pipe.execute()


def start_baseline(stack: Stack, module: str, pool: str, concurrency: int, index: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "celery", "-A", f"askq.bench.baselines.{module}", "worker", "--pool", pool,
            "--concurrency", str(concurrency), "--queues", BASELINE_QUEUE, "--loglevel", "warning",
            "--without-gossip", "--without-mingle", "--hostname", f"{module}{index}@%h"]
    env = stack.env(BENCH_REDIS_URL=stack.redis_url or "", BENCH_SIM_URL=stack.sim_url, BENCH_QUEUE=BASELINE_QUEUE)
    proc = stack.spawn(f"{module}{index}", args, env)
    stack.workers.append(proc)
    return proc


def baseline_timings(r: redis.Redis) -> list[tuple[float, float, float]]:
    rows = [json.loads(x) for x in r.lrange(DONE_KEY, 0, -1)]
    return [(float(x["created"]), float(x["started"]), float(x["finished"])) for x in rows]


def run_baseline(stack: Stack, r: redis.Redis, module: str, pool: str, workers: int, concurrency: int,
                 jobs: int, timeout_s: float, warmup: int = 10) -> Figures:
    """Start a baseline's workers, warm them up, time `jobs` jobs, stop them."""
    r.delete(DONE_KEY, READY_KEY, BASELINE_QUEUE)
    procs = [start_baseline(stack, module, pool, concurrency, i) for i in range(workers)]
    try:
        if not wait_until(lambda: r.scard(READY_KEY) >= workers, 60):
            raise BenchError(f"baseline {module} workers did not start; see {stack.var_dir}")
        push_baseline(r, f"bench.{module}", make_specs(warmup, f"warm-{module}"))
        wait_until(lambda: r.llen(DONE_KEY) >= warmup, 60)
        r.delete(DONE_KEY)
        watch = ProcWatch([p.pid for p in procs]).start()
        t0 = time.time()
        push_baseline(r, f"bench.{module}", make_specs(jobs, module))
        wait_until(lambda: r.llen(DONE_KEY) >= jobs, timeout_s, 0.2)
        cpu_s = watch.stop()
        return figures(module, workers, concurrency, jobs, t0, baseline_timings(r), cpu_s, watch.peak_rss_mb())
    finally:
        for proc in procs:
            stack.kill_worker(proc, 15)
            stack.workers.remove(proc)
        r.delete(BASELINE_QUEUE)


def askq_timings(r: redis.Redis, ids: list[str]) -> list[tuple[float, float, float]]:
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), ["created", "result"])
    out = []
    for created, result in pipe.execute():
        if result:
            res = json.loads(result)
            out.append((float(created), float(res["started"]), float(res["finished"])))
    return out
