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

from askq.bench.baselines import done_key, ready_key
from askq.bench.measure import ProcWatch, wait_until
from askq.broker import envelope
from askq.core import keys
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


def push_baseline(r: redis.Redis, task: str, specs: list[JobSpec], queue: str = BASELINE_QUEUE) -> None:
    """Enqueue jobs for a baseline: askq's own message, under the baseline's task name, pipelined."""
    pipe = r.pipeline(transaction=False)
    for spec in specs:
        env = json.loads(envelope.build(queue, spec.model_dump(mode="json"), dispatch=1))
        env["headers"]["task"] = task
        pipe.lpush(queue, json.dumps(env))
    pipe.execute()


def start_baseline(stack: Stack, module: str, pool: str, concurrency: int, index: int,
                   queue: str = BASELINE_QUEUE) -> subprocess.Popen[bytes]:
    if module == "floor":
        args = [sys.executable, "-m", "askq.bench.baselines.floor", "--concurrency", str(concurrency)]
    else:
        args = [sys.executable, "-m", "celery", "-A", f"askq.bench.baselines.{module}", "worker", "--pool", pool,
                "--concurrency", str(concurrency), "--queues", queue, "--loglevel", "warning",
                "--without-gossip", "--without-mingle", "--hostname", f"{module}{index}@%h"]
    env = stack.env(BENCH_REDIS_URL=stack.redis_url or "", BENCH_SIM_URL=stack.sim_url, BENCH_QUEUE=queue)
    proc = stack.spawn(f"{module}{index}", args, env)
    stack.workers.append(proc)
    return proc


def baseline_timings(r: redis.Redis, queue: str = BASELINE_QUEUE) -> list[tuple[float, float, float]]:
    rows = [json.loads(x) for x in r.lrange(done_key(queue), 0, -1)]
    return [(float(x["created"]), float(x["started"]), float(x["finished"])) for x in rows]


class Design:
    """One design's worker processes, kept up while the bench gives them bursts in turn."""

    name: str
    stack: Stack
    procs: list[subprocess.Popen[bytes]]

    def burst(self, jobs: int, timeout_s: float) -> Figures:
        raise NotImplementedError

    def submit_one(self, spec: JobSpec) -> str:
        """Enqueue one job (the open loop's arrivals); its id."""
        raise NotImplementedError

    def wait_done(self, count: int, timeout_s: float) -> None:
        """Wait until the `count` jobs submitted one by one since the last call are answered."""
        raise NotImplementedError

    def timings(self, ids: list[str]) -> list[tuple[float, float, float]]:
        """(created, started, finished) of these answered jobs."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop this design's worker processes (a design with more to clean up extends this)."""
        for proc in self.procs:
            self.stack.kill_worker(proc, 15)
            if proc in self.stack.workers:
                self.stack.workers.remove(proc)
        self.procs = []


class Baseline(Design):
    """A baseline's workers on their own queue: started and warmed up once, timed per burst."""

    def __init__(self, stack: Stack, r: redis.Redis, module: str, pool: str, workers: int, concurrency: int,
                 warmup: int = 10, queue: str | None = None) -> None:
        self.stack, self.r, self.name, self.module = stack, r, module, module
        self.workers, self.concurrency = workers, concurrency
        self.queue = queue or f"{BASELINE_QUEUE}.{module}"
        self.done = done_key(self.queue)
        self._open = False
        r.delete(self.done, ready_key(self.queue), self.queue)
        self.procs = [start_baseline(stack, module, pool, concurrency, i, self.queue) for i in range(workers)]
        try:
            if not wait_until(lambda: r.scard(ready_key(self.queue)) >= workers, 60):
                raise BenchError(f"baseline {module} workers did not start; see {stack.var_dir}")
            push_baseline(r, f"bench.{module}", make_specs(warmup, f"warm-{module}-{time.time()}"), self.queue)
            wait_until(lambda: r.llen(self.done) >= warmup, 60)
        except BaseException:
            self.stop()
            raise

    def burst(self, jobs: int, timeout_s: float) -> Figures:
        r = self.r
        r.delete(self.done)
        watch = ProcWatch([p.pid for p in self.procs]).start()
        t0 = time.time()
        push_baseline(r, f"bench.{self.module}", make_specs(jobs, f"{self.module}{t0}"), self.queue)
        wait_until(lambda: r.llen(self.done) >= jobs, timeout_s, 0.05)
        cpu_s = watch.stop()
        return figures(self.name, self.workers, self.concurrency, jobs, t0, baseline_timings(r, self.queue), cpu_s,
                       watch.peak_rss_mb())

    def submit_one(self, spec: JobSpec) -> str:
        if not self._open:
            self.r.delete(self.done)
            self._open = True
        fresh = JobSpec.new(spec.question, [], None, None)  # created now, at its arrival, as askq's submit does
        push_baseline(self.r, f"bench.{self.module}", [fresh], self.queue)
        return fresh.id

    def wait_done(self, count: int, timeout_s: float) -> None:
        wait_until(lambda: self.r.llen(self.done) >= count, timeout_s, 0.05)
        self._open = False

    def timings(self, ids: list[str]) -> list[tuple[float, float, float]]:
        return baseline_timings(self.r, self.queue)

    def stop(self) -> None:
        super().stop()
        self.r.delete(self.queue, self.done, ready_key(self.queue))


def run_baseline(stack: Stack, r: redis.Redis, module: str, pool: str, workers: int, concurrency: int,
                 jobs: int, timeout_s: float, warmup: int = 10) -> Figures:
    """Start a baseline's workers, warm them up, time `jobs` jobs, stop them."""
    design = Baseline(stack, r, module, pool, workers, concurrency, warmup, queue=BASELINE_QUEUE)
    try:
        return design.burst(jobs, timeout_s)
    finally:
        design.stop()


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
