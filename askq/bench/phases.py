"""The chaos phases, run one after another on one stack; each submits its own jobs and faults.

- mix: M jobs, the classic fault mix on 30 % of calls, a worker `kill -9`ed every `every` s
  (the one holding the most jobs) and a fresh one started, one worker frozen (SIGSTOP) and
  resumed after lease + 2 s, Redis restarted once (AOF).
- redis_freeze: one worker, 20 jobs whose model calls outlast the freeze; 3 s after they
  started, Redis is frozen (SIGSTOP) for `redis_freeze_s`, longer than a lease, then resumed.
- late_worker: two workers on a 3 s model; the busiest is frozen while its calls are in
  flight, every model then answers 500, so the other worker answers its jobs with the default
  answer, which the reader sees; the models heal and the frozen worker resumes.
- slow_provider: the primary model is slow on every call (simcontrol.SLOW_FAULT_KIND); each
  job must still end within the ladder's timeout-based bound.
- burst: the malformed entries (askq/bench/malformed.py) pushed onto the queue, with normal jobs
  behind them, at two workers.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from rich.console import Console

from askq.bench import simcontrol
from askq.bench.crew import Crew
from askq.bench.malformed import Entry, malformed_entries, records_per_entry
from askq.bench.reader import FirstResults
from askq.bench.workload import make_specs
from askq.config.settings import ProviderSettings, Settings
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.producers.client import Client
from askq.stack import Stack, default_providers

console = Console(stderr=True, markup=False)  # "[phase]" prefixes are text, not styles

PHASES = ("mix", "redis_freeze", "late_worker", "slow_provider", "burst")
TERMINAL = ("succeeded", "dead")


@dataclass
class Options:
    """What a chaos run does; the defaults are `askq chaos`'s."""

    jobs: int = 5000
    deadline_s: float = 900.0
    workers: int = 3
    concurrency: int = 50
    every_s: float = 10.0
    latency_s: float = 0.3
    lease_s: float | None = None
    redis_freeze_s: float = 15.0
    worker_freeze_s: float = 25.0
    phases: tuple[str, ...] = PHASES


@dataclass
class Run:
    """One chaos run: the stack, its clients, the crew, the reader, and what each phase did."""

    opts: Options
    stack: Stack
    settings: Settings
    r: redis.Redis
    client: Client
    crew: Crew
    reader: FirstResults
    lease_s: float
    heartbeat_s: float
    reaper_interval_s: float
    tag: str
    stop_at: float
    ids: dict[str, list[str]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_time: dict[str, bool] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    burst_started: float = 0.0

    def submit(self, phase: str, count: int) -> list[str]:
        specs = make_specs(count, f"{self.tag}-{phase}")
        ids = self.client.submit_many([{"question": s.question} for s in specs])
        self.ids.setdefault(phase, []).extend(ids)
        self.reader.follow(ids)
        return ids

    def tick(self) -> None:
        """What runs between steps: deaths watched, results read (Redis may be away)."""
        self.crew.watch()
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            self.reader.poll()

    def wait(self, condition: Callable[[], bool], until: float) -> bool:
        """Tick until condition() holds (Redis errors count as not yet) or the monotonic time `until`."""
        while True:
            try:
                if condition():
                    return True
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if time.monotonic() >= min(until, self.stop_at):
                return False
            self.tick()
            time.sleep(0.2)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def states(self, ids: list[str]) -> list[str | None]:
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        return list(pipe.execute())

    def all_terminal(self, ids: list[str]) -> bool:
        return all(s in TERMINAL for s in self.states(ids))

    def close_breakers(self) -> None:
        """Start a phase with every breaker closed: one phase's provider trouble (or a probe a
        killed or frozen worker took with it) must not decide how the next one's jobs run."""
        names = [p.name for p in self.settings.providers]
        self.r.delete(*[keys.breaker(n) for n in names], *[keys.breaker_window(n) for n in names])

    def staff(self, count: int, concurrency: int, replacements: int = 3, **env: str) -> None:
        self.crew.staff(count, concurrency, replacements, **env)
        self.crew.wait_consuming(max(1.0, min(60.0, self.stop_at - time.monotonic())))


def ladder_bound_s(providers: list[ProviderSettings], slack_s: float = 5.0) -> float:
    """Longest a run can take when every call hits its timeout: per tier, every attempt's
    timeout plus the backoff between attempts (each at most the cap, and at most the budget)."""
    return slack_s + sum(p.retry.max_attempts * p.timeout_s
                         + (p.retry.max_attempts - 1) * min(p.retry.cap_s, p.retry.budget_s) for p in providers)


def chaos_providers(sim_url: str) -> list[ProviderSettings]:
    return [ProviderSettings.model_validate(p) for p in default_providers(sim_url)]


def budget_s(run_opts: Options, phase: str, lease_s: float) -> float:
    """Time a phase may take before it is cut (its jobs then count as lost)."""
    o = run_opts
    model_s = 2 * o.redis_freeze_s + 5
    return {
        "mix": 60.0,  # the rest of the deadline, at least this
        "redis_freeze": 30 + o.redis_freeze_s + 3 * (model_s + lease_s) + 20,
        "late_worker": 40 + o.worker_freeze_s + 3 * lease_s + 60,
        "slow_provider": 40 + ladder_bound_s(chaos_providers("http://127.0.0.1:1/v1")) + 30,
        "burst": 30 + 2 * lease_s,
    }[phase]


def mix(run: Run, until: float) -> bool:
    o, crew, stack = run.opts, run.crew, run.stack
    simcontrol.put(stack.sim_url, {"latency_s": o.latency_s, "jitter_s": o.latency_s / 2} | simcontrol.mix())
    run.staff(o.workers, o.concurrency)
    ids = run.submit("mix", o.jobs)
    console.print(f"[mix] {o.jobs} jobs, {o.workers} workers x {o.concurrency}, kill every {o.every_s} s")
    t0 = time.monotonic()
    frozen = None
    freeze_at, resume_at, restart_at = o.every_s / 2, o.every_s / 2 + run.lease_s + 2, o.every_s * 1.5
    next_kill, restarted, resumed, last_check, done = o.every_s, False, False, 0.0, False
    while time.monotonic() < min(until, run.stop_at):
        t = time.monotonic() - t0
        try:
            if frozen is None and t >= freeze_at and (target := crew.busiest()) is not None:
                frozen = target
                crew.strike(frozen, signal.SIGSTOP, "froze")
                crew.hire()
            if frozen is not None and not resumed and t >= resume_at:
                crew.resume(frozen)
                resumed = True
            if not restarted and t >= restart_at:
                assert stack.redis is not None
                stack.redis.restart()
                crew.event("redis_restarted")
                console.print("[mix] restarted redis")
                restarted = True
            if t >= next_kill:
                victim = crew.busiest()
                if victim is None:
                    crew.event("kill_skipped", why="every worker holds a job struck twice already")
                else:
                    crew.strike(victim, signal.SIGKILL, "killed")
                    crew.hire()
                next_kill += o.every_s
            events_done = restarted and resumed
            if events_done and time.monotonic() - last_check >= 1.0:
                last_check = time.monotonic()
                done = run.all_terminal(ids)
                if done:
                    break
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # Redis is restarting: the scenario carries on
        run.tick()
        time.sleep(0.2)
    if frozen is not None and not resumed:
        crew.resume(frozen)
    return done


def redis_freeze(run: Run, until: float, jobs: int = 20) -> bool:
    o, crew, stack = run.opts, run.crew, run.stack
    assert stack.redis is not None and stack.redis.proc is not None
    # The model answers after the freeze and the reclaim that follows it: the first run still
    # waits on the model when the reclaimed delivery arrives, as in issue 10's report.
    model_s = 2 * o.redis_freeze_s + 5
    providers = default_providers(stack.sim_url, timeout_s=2 * model_s + 10)
    simcontrol.put(stack.sim_url, simcontrol.healthy(model_s))
    run.staff(1, max(50, jobs), ASKQ_CACHE_FAST_PATH="false", ASKQ_PROVIDERS=json.dumps(providers))
    ids = run.submit("redis_freeze", jobs)
    run.wait(lambda: run.states(ids).count("running") == len(ids), time.monotonic() + 60)
    run.sleep(3.0)
    running = run.states(ids).count("running")
    pid = stack.redis.proc.pid
    console.print(f"[redis_freeze] {running} of {jobs} jobs running; freezing redis {pid} for {o.redis_freeze_s} s")
    crew.event("redis_frozen", pid=pid, seconds=o.redis_freeze_s)
    stack.redis.proc.send_signal(signal.SIGSTOP)
    try:
        # No Redis call while it is frozen: each would block the schedule for a socket timeout.
        end = time.monotonic() + o.redis_freeze_s
        while time.monotonic() < end:
            crew.watch()
            time.sleep(0.2)
    finally:
        stack.redis.proc.send_signal(signal.SIGCONT)
    crew.event("redis_resumed", pid=pid)
    done = run.wait(lambda: run.all_terminal(ids), until)
    pipe = run.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "delivery")
    deliveries = [int(d or 0) for d in pipe.execute()]
    run.figures["redis_freeze"] = {
        "jobs": jobs, "freeze_s": o.redis_freeze_s, "model_latency_s": model_s, "running_at_freeze": running,
        "deliveries": {str(d): deliveries.count(d) for d in sorted(set(deliveries))},
        "deliveries_max": max(deliveries, default=0),
    }
    return done


def late_worker(run: Run, until: float) -> bool:
    o, crew, stack = run.opts, run.crew, run.stack
    concurrency = o.concurrency
    simcontrol.put(stack.sim_url, simcontrol.healthy(3.0))
    # Calls outlive the freeze: on waking, the frozen worker reads the answers waiting in its
    # sockets instead of timing out all at once. And no breaker opens in this phase: the 500s
    # or those timeouts would open it, and runs skipping to the default answer replace nothing;
    # the phase is about a late result write, not about the breaker.
    providers = default_providers(stack.sim_url, timeout_s=o.worker_freeze_s + 20)
    run.staff(2, concurrency, ASKQ_PROVIDERS=json.dumps(providers), ASKQ_BREAKER__MIN_REQUESTS="1000000")
    ids = run.submit("late_worker", 4 * concurrency)
    run.wait(lambda: max(len(crew.held_by(p)) for p in crew.live) >= concurrency // 2, time.monotonic() + 30)
    frozen = crew.busiest() or crew.live[0]
    t_freeze = time.monotonic()
    held = crew.strike(frozen, signal.SIGSTOP, "froze")
    try:
        # Requests already at the model were given a healthy answer; every later call fails.
        simcontrol.put(stack.sim_url, simcontrol.failing(0.2))
        crew.event("providers_failing")
        answered = run.wait(lambda: all(j in run.reader.first for j in held),
                            t_freeze + o.worker_freeze_s + 3 * run.lease_s + 20)
        simcontrol.put(stack.sim_url, simcontrol.healthy(0.2))
        crew.event("providers_healthy")
        # Healthy as askq sees it: fresh jobs until one is answered by the primary.
        healed, heal_until, heal = False, time.monotonic() + o.worker_freeze_s + 30, list[str]()
        while not healed and time.monotonic() < min(heal_until, until):
            heal.extend(run.submit("late_worker", 1))
            healed = run.wait(lambda: "primary" in _sources(run, heal), time.monotonic() + 1.0)
        run.sleep(max(0.0, t_freeze + o.worker_freeze_s - time.monotonic()))
    finally:
        crew.resume(frozen)
    # Its runs end within a few heartbeats of waking (calls already answered, or failing fast).
    run.sleep(2 * run.heartbeat_s)
    done = run.wait(lambda: run.all_terminal(ids) and crew.inflight(frozen) == 0, until)
    degraded = [j for j in held if j in run.reader.first and run.reader.first[j][0] in ("default", "cache")]
    run.figures["late_worker"] = {
        "jobs": len(run.ids["late_worker"]), "frozen_s": round(time.monotonic() - t_freeze, 1),
        "frozen_held": len(held),
        "answered_while_frozen": answered, "healed_before_resume": healed, "held_seen_degraded": len(degraded),
        "held": held,
    }
    return done


def slow_provider(run: Run, until: float, jobs: int = 20) -> bool:
    stack = run.stack
    simcontrol.put(stack.sim_url, simcontrol.slow_primary(0.2))
    run.staff(1, run.opts.concurrency)
    bound = ladder_bound_s(chaos_providers(stack.sim_url))
    t0 = time.time()
    ids = run.submit("slow_provider", jobs)
    done = run.wait(lambda: run.all_terminal(ids), min(until, time.monotonic() + bound + 30))
    pipe = run.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), ["state", "result", "updated"])
    runs: list[float] = []
    for state, result, updated in pipe.execute():
        res = json.loads(result) if result else {}
        if state == "succeeded" and res.get("started"):
            runs.append(float(res["finished"]) - float(res["started"]))
        elif state == "dead":
            runs.append(float(updated or time.time()) - t0)
        else:  # not finished: it has been going at least since it was submitted
            runs.append(time.time() - t0)
    run.figures["slow_provider"] = {
        "jobs": jobs, "fault": simcontrol.SLOW_FAULT_KIND, "bound_s": round(bound, 1),
        "run_max_s": round(max(runs, default=0.0), 2),
        "sources": _sources(run, ids),
    }
    return done


def burst(run: Run, until: float, jobs: int = 50) -> bool:
    stack = run.stack
    simcontrol.put(stack.sim_url, simcontrol.healthy(run.opts.latency_s))
    run.staff(2, run.opts.concurrency, replacements=4)
    run.entries = malformed_entries(run.settings.queue, run.tag.replace("-", "").replace(".", ""))
    run.burst_started = time.time()
    run.r.lpush(run.settings.queue, *[e.data for e in run.entries])
    run.crew.event("malformed_burst", count=len(run.entries))
    console.print(f"[burst] pushed {len(run.entries)} malformed entries")
    ids = run.submit("burst", jobs)

    def settled() -> bool:
        counts, _ = records_per_entry(run.entries, invalid_records(run))
        return all(counts.values()) and run.all_terminal(ids)

    return run.wait(settled, until)


def invalid_records(run: Run) -> list[Any]:
    return run.client.dlq.list(reason=DeadReason.INVALID_PAYLOAD, since=run.burst_started, limit=100000)


def _sources(run: Run, ids: list[str]) -> dict[str, int]:
    pipe = run.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "source")
    out: dict[str, int] = {}
    for source in pipe.execute():
        out[str(source)] = out.get(str(source), 0) + 1
    return out


RUNNERS: dict[str, Callable[[Run, float], bool]] = {
    "mix": mix, "redis_freeze": redis_freeze, "late_worker": late_worker,
    "slow_provider": slow_provider, "burst": burst,
}
