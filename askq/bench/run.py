"""`askq bench`: askq against the textbook, the bare Celery worker and the floor on one simulator.

One embedded stack (Redis, simulator with latency L) serves every design. Each design's workers
are started and warmed up once, then the designs get bursts of distinct jobs in turn, round
after round (askq/bench/rounds.py); the clock runs from the submission of a burst to its last
answer. CPU per job comes from the kernel's accounting of the worker processes (user + system,
children included) over the timed burst.
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
from askq.bench.plot import check_path, draw
from askq.bench.rounds import Rounds, load, spread
from askq.bench.workload import Baseline, Design, Figures, askq_timings, figures, make_specs
from askq.config.settings import Settings, load_settings
from askq.core import keys
from askq.core.connection import connect
from askq.core.job import JobSpec
from askq.errors import BenchError
from askq.producers.client import Client
from askq.stack import Stack, default_providers

console = Console(stderr=True)


def askq_settings(stack: Stack) -> Settings:
    return load_settings(redis_url=stack.redis_url, var_dir=stack.var_dir,
                         providers=default_providers(stack.sim_url))


class Askq(Design):
    """askq's workers, started and warmed up once (every slot used), timed per burst."""

    def __init__(self, stack: Stack, client: Client, workers: int, concurrency: int,
                 warmup: int | None = None, name: str = "askq", **env: str) -> None:
        """env: extra environment for these workers, so a variant (a setting, a library) can be
        measured against askq as it is, in the same rounds (askq/bench/rounds.py)."""
        self.stack, self.client, self.name = stack, client, name
        self.workers, self.concurrency = workers, concurrency
        r = client.redis
        before = r.zcard(keys.WORKERS)
        self.procs = [stack.start_worker(concurrency=concurrency, name=f"{name}{i}-{time.time()}", **env)
                      for i in range(workers)]
        try:
            if not wait_until(lambda: r.zcard(keys.WORKERS) >= before + workers, 60):
                raise BenchError(f"askq workers did not start; see {stack.var_dir}")
            # The warm-up fills every slot once, so connection pools are full before the clock starts.
            count = warmup if warmup is not None else workers * concurrency
            client.submit_many([{"question": s.question} for s in make_specs(count, f"warm{time.time()}")])
            wait_until(lambda: client.store.pending_count() == 0, 60)
        except BaseException:
            self.stop()
            raise

    def burst(self, jobs: int, timeout_s: float) -> Figures:
        client = self.client
        watch = ProcWatch([p.pid for p in self.procs]).start()
        specs = make_specs(jobs, f"askq{time.time()}")
        t0 = time.time()
        ids = client.submit_many([{"question": s.question} for s in specs])
        wait_until(lambda: client.store.pending_count() == 0, timeout_s, 0.05)
        cpu_s = watch.stop()
        return figures(self.name, self.workers, self.concurrency, jobs, t0, askq_timings(client.redis, ids), cpu_s,
                       watch.peak_rss_mb())

    def submit_one(self, spec: JobSpec) -> str:
        return self.client.submit(spec.question)

    def wait_done(self, count: int, timeout_s: float) -> None:
        wait_until(lambda: self.client.store.pending_count() == 0, timeout_s, 0.05)

    def timings(self, ids: list[str]) -> list[tuple[float, float, float]]:
        return askq_timings(self.client.redis, ids)


def run_askq(stack: Stack, client: Client, workers: int, concurrency: int, jobs: int, timeout_s: float,
             warmup: int | None = None) -> Figures:
    """Start askq workers, warm them up, time a burst of `jobs` jobs, stop them."""
    design = Askq(stack, client, workers, concurrency, warmup)
    try:
        return design.burst(jobs, timeout_s)
    finally:
        design.stop()


LEVELS = (25, 50, 100, 200, 400)


def sweep(stack: Stack, client: Client, workers: int, path: Path, jobs: int = 1000,
          levels: tuple[int, ...] = LEVELS, latency_s: float = 1.0) -> list[dict[str, Any]]:
    """Run askq at each concurrency level (per worker), draw the plot at `path`, return the points.

    Each point says what bounds it: the slots (jobs in flight / L) and the CPU the workers used
    (jobs/s x CPU per job, in cores); where jobs/s falls below the slot bound, the CPU is the limit.
    """
    points = []
    for level in levels:
        f = run_askq(stack, client, workers, level, jobs, timeout_s=max(120.0, jobs / 10))
        points.append({"concurrency": level * workers, "per_worker": level, "jobs_per_s": f.jobs_per_s,
                       "p99_s": f.p99_s, "cpu_ms_per_job": f.cpu_ms_per_job,
                       "slot_bound_jobs_per_s": round(level * workers / latency_s, 1),
                       "worker_cores": round(f.jobs_per_s * f.cpu_ms_per_job / 1000, 2), "load": load()})
    draw(points, path)
    return points


def _cell(s: dict[str, float]) -> str:
    return f"{s['median']:g} ({s['min']:g}-{s['max']:g})"


def render(rounds: Rounds, out: Console) -> None:
    n = len(rounds.rounds)
    table = Table(title=f"askq bench: median (min-max) of {n} interleaved rounds, load {rounds.as_dict()['load']}")
    for col in ("design", "workersxconc", "jobs", "jobs/s", "p50 s", "p99 s", "wait p99 s", "CPU ms/job",
                "peak RSS MiB/worker"):
        table.add_column(col, justify="right")
    for name in rounds.names():
        f = rounds.rounds[0][name]
        s = rounds.summary(name)
        short = min(row[name].done for row in rounds.rounds)  # a burst that timed out says so
        jobs = str(f.jobs) if short >= f.jobs else f"{short}/{f.jobs} answered"
        table.add_row(name, f"{f.workers}x{f.concurrency}", jobs, _cell(s["jobs_per_s"]), _cell(s["p50_s"]),
                      _cell(s["p99_s"]), _cell(s["wait_p99_s"]), _cell(s["cpu_ms_per_job"]),
                      f"{s['peak_rss_mb']['max']:g}")
    out.print(table)
    for name, values in rounds.ratios().items():
        out.print(f"{name}: {_cell(spread(values))}  (per round: {', '.join(f'{v:.2f}' for v in values)})")


# --quick: a few seconds, askq against bare (and the floor); fails on a gross regression, never on times.
QUICK_MAX_CPU_RATIO = 2.0


def gross_regression(result: dict[str, Any]) -> str | None:
    """What is grossly wrong with a run's figures (--quick), None if nothing: ratios only, never times."""
    ratio = result.get("cpu_ratio_vs_bare")
    if ratio is None:
        return "no CPU ratio to the bare baseline was measured"
    if ratio > QUICK_MAX_CPU_RATIO:
        return (f"askq's CPU per job is {ratio:.2f}x the bare baseline's in this run (median of "
                f"{result.get('rounds_n')} rounds), more than {QUICK_MAX_CPU_RATIO:g}x: a gross regression")
    lost = [f"{name} {row[name]['done']}/{row[name]['jobs']}" for row in result.get("rounds", []) for name in row
            if row[name]["done"] < row[name]["jobs"]]
    if lost:
        return f"bursts did not finish: {', '.join(lost)} jobs answered"
    return None


def run_bench(jobs: int = 3000, latency_s: float = 1.0, concurrency: int = 200, workers: int = 2,
              textbook_jobs: int = 40, skip_baselines: bool = False, submit_only: bool = False,
              plot: Path | None = None, as_json: bool = False, var_dir: Path | None = None,
              extra_env: dict[str, str] | None = None, rounds: int = 3, quick: bool = False,
              rates: list[str] | None = None, floor: bool = True, durability: str = "relaxed") -> int:
    base = load_settings()
    if rates:
        from askq.bench.openloop import parse_rate

        for text in rates:  # a bad --rate is refused before anything starts
            parse_rate(text)  # a share is checked against the capacity once it is measured
    if plot is not None:
        check_path(plot)  # drawn at the end of the run: refused before it starts
    if quick:
        jobs, latency_s, concurrency, workers, rounds = 300, 0.2, 50, 1, 3
        textbook_jobs = 0  # the floor stays: a few seconds more, and its code path is exercised too
    with Stack(var_dir or base.var_dir / "bench", env={"ASKQ_LOG_LEVEL": "warning", **(extra_env or {})}) as stack:
        stack.start_redis()
        if submit_only:
            from askq.bench.submit import measure_submit, render_submit

            out = measure_submit(stack, durability=durability)
            print(json.dumps(out, sort_keys=True) if as_json else render_submit(out))
            return 0
        stack.start_sim(latency_s=latency_s)
        client = Client(askq_settings(stack), connect(base, stack.redis_url))
        r = redis.Redis.from_url(stack.redis_url or "", decode_responses=True)
        result: dict[str, Any] = {"latency_s": latency_s, "cores": os.cpu_count(), "rounds_n": rounds}
        console.print(f"{rounds} rounds of {jobs} jobs, {workers} workers x {concurrency}, L = {latency_s} s, "
                      f"load {load()} ...")
        designs: list[tuple[Design, int, float]] = []
        timeout = max(120.0, jobs / 20)
        try:
            mine = Askq(stack, client, workers, concurrency)
            designs.append((mine, jobs, timeout))
            if not skip_baselines:
                designs.append((Baseline(stack, r, "bare", "threads", workers, concurrency,
                                         warmup=workers * concurrency), jobs, timeout))
                if floor:
                    designs.append((Baseline(stack, r, "floor", "asyncio", workers, concurrency,
                                             warmup=workers * concurrency), jobs, timeout))
                if textbook_jobs:
                    cores = os.cpu_count() or 1
                    designs.append((Baseline(stack, r, "textbook", "prefork", 1, cores, warmup=2 * cores),
                                    textbook_jobs, textbook_jobs * latency_s * 3 + 60))
            measured = Rounds(sim_pid=stack.sim.pid if stack.sim else None)
            measured.run(designs, rounds, console.print)
            for design, _, _ in designs[1:]:
                if design.name != "floor" or not rates:
                    design.stop()
            result |= measured.as_dict()
            for name in measured.names():
                result[name] = measured.median_figures(name)
            if rates:
                from askq.bench.openloop import open_loop

                capacity = float(result["askq"]["jobs_per_s"])
                result["open_loop"] = points = open_loop(mine, rates, capacity, latency_s, jobs, console.print)
                result |= {k: points[0][k] for k in ("overhead_p50_ms", "overhead_p99_ms", "offered_load_ratio")}
                # The floor at the first rate: what the machine itself adds (scheduling, the
                # simulator, Redis) to a job that carries no queue's bookkeeping.
                floors = [d for d, _, _ in designs if d.name == "floor"]
                if floors:
                    result["open_loop_floor"] = open_loop(floors[0], rates[:1], capacity, latency_s, jobs,
                                                          console.print)
                    floors[0].stop()
                if plot is not None:
                    from askq.bench.plot import draw_latency

                    draw_latency(points, plot.with_name(f"{plot.stem}-latency{plot.suffix}"), latency_s)
            mine.stop()
        finally:
            for design, _, _ in designs:
                design.stop()
        if plot is not None:
            result["sweep"] = sweep(stack, client, workers, plot, jobs=min(jobs, 1000), latency_s=latency_s)
        client.close()
        r.close()
    result |= {"jobs_per_s": result["askq"]["jobs_per_s"], "p99_s": result["askq"]["p99_s"],
               "cpu_ms_per_job": result["askq"]["cpu_ms_per_job"]}
    # With --json the table still goes to stderr, so one run gives both.
    render(measured, Console(width=200, stderr=as_json))
    if as_json:
        print(json.dumps(result, sort_keys=True))
    if quick:
        problem = gross_regression(result)
        if problem:
            console.print(f"askq bench --quick: {problem}")
            return 1
        console.print(f"askq bench --quick: askq's CPU per job is {result['cpu_ratio_vs_bare']:.2f}x bare's "
                      f"(fails above {QUICK_MAX_CPU_RATIO:g}x)")
    return 0
