"""`askq chaos`: a bounded run on loopback where workers die, freeze and Redis restarts under load.

Scenario (times from the start, `every` = kill interval, default 10 s):
- M distinct jobs submitted in bulk; simulator faults of every kind on 30 % of calls;
- at 1 s a burst of malformed queue entries (not JSON, not an envelope, unknown task, bad
  body, missing fields, positional args) is LPUSHed onto the queue;
- every `every` s one worker is killed with SIGKILL and a fresh one started;
- at every/2 s one worker is frozen (SIGSTOP) and resumed (SIGCONT) after lease_s + 2 s, by
  when its jobs have moved on, so its late answers must be refused;
- at 1.5 x every s Redis is restarted (graceful shutdown, AOF reload).
It ends when every job is terminal and every scheduled event has happened, or at the global
deadline, whichever is first; then it checks the job store.

Recovery time of a reclaimed job: from the moment its worker was killed or frozen (the job
was `running` under that worker just before) to the moment the job became terminal by
another delivery (the result's `finished`, or `updated` for a dead job). It includes the
lease expiry, the reaper's requeue, the wait behind the queue's backlog and the new run.
Reclaim time is the same up to the moment another worker claimed it (the new run's start).
"""

from __future__ import annotations

import base64
import json
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from askq.stack import Stack, default_providers
from bench.measure import wait_until
from bench.workload import make_specs
from config.settings import load_settings
from core import keys, message
from core.connection import connect
from core.job import DeadReason
from core.stats import percentile
from producers.client import Client
from sim.faults import FAULT_KINDS

console = Console(stderr=True)

# Independent draws per kind: 1 - (1 - p) ** 14 = 0.30 of calls get some fault.
_P = 1 - 0.7 ** (1 / len(FAULT_KINDS))
FAULTS: dict[str, Any] = {
    "faults": [{"kind": kind, "probability": round(_P, 5), "hang_s": 8.0, "retry_after_s": 0.5}
               for kind in sorted(FAULT_KINDS)],
}


def malformed_entries(queue: str) -> list[str]:
    """Queue entries no worker may run: each must end as one invalid_payload dead letter."""
    good = json.loads(message.build(queue, {"id": "x"}, dispatch=1))

    def envelope(task: str | None = None, body: Any = None, raw_body: str | None = None) -> str:
        env = json.loads(json.dumps(good))
        if task is not None:
            env["headers"]["task"] = task
        if raw_body is not None:
            env["body"] = raw_body
        elif body is not None:
            env["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        env["headers"]["kwargsrepr"] = "{}"
        return json.dumps(env)

    return [
        "this is not json",
        "\x00\xff{garbage",
        json.dumps({"hello": "world"}),
        json.dumps([1, 2, 3]),
        envelope(task="askq.no_such_task", body=[[], {}, {}]),
        envelope(raw_body="%%% not base64 %%%"),
        envelope(body=[[], {"dispatch": 1}, {}]),  # job missing
        envelope(body=[["positional"], {"job": {"id": "y"}}, {}]),
        envelope(body=[[], {"job": {"id": "z", "question": ""}, "dispatch": 1}, {}]),
        envelope(body=[[], {"job": "not an object", "dispatch": 0}, {}]),
    ]


@dataclass
class Chaos:
    """The running scenario: the stack, the workers, and what was done to whom, when."""

    stack: Stack
    r: redis.Redis
    concurrency: int
    # job id -> time its worker was killed or frozen while it held the job
    struck: dict[str, float] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.stack.start_worker(concurrency=self.concurrency)

    def held_by(self, proc: subprocess.Popen[bytes]) -> list[str]:
        """Jobs running under this worker process right now (per the job store)."""
        ids = [str(i) for i in self.r.zrange(keys.LEASES, 0, -1)]
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), ["state", "worker"])
        suffix = f":{proc.pid}"
        return [i for i, (state, worker) in zip(ids, pipe.execute(), strict=True)
                if state == "running" and str(worker or "").endswith(suffix)]

    def busiest(self, procs: list[subprocess.Popen[bytes]]) -> int:
        """Index of the worker holding the most jobs (a random one among equals)."""
        held = [(len(self.held_by(p)), random.random(), i) for i, p in enumerate(procs)]
        return max(held)[2]

    def strike(self, proc: subprocess.Popen[bytes], sig: int, what: str) -> None:
        now = time.time()
        held = self.held_by(proc)
        for job_id in held:
            self.struck.setdefault(job_id, now)
        self.stack.kill_worker(proc, sig)
        self.events.append({"at": round(now, 3), "event": what, "pid": proc.pid, "held": len(held)})
        console.print(f"{what} worker {proc.pid} holding {len(held)} job(s)")


def run_scenario(chaos: Chaos, ids: list[str], deadline: float, every_s: float, lease_s: float,
                 workers: int) -> bool:
    """Drive the events until every job is terminal and all events happened; False at the deadline."""
    stack, r = chaos.stack, chaos.r
    live = [chaos.start_worker() for _ in range(workers)]
    # The clock starts once the workers are consuming, so the first blows land on busy workers.
    wait_until(lambda: r.zcard(keys.WORKERS) >= workers, max(1.0, deadline - time.monotonic()))
    t0 = time.monotonic()
    frozen: subprocess.Popen[bytes] | None = None
    schedule = {"burst": 1.0, "freeze": every_s / 2, "resume": every_s / 2 + lease_s + 2, "redis": every_s * 1.5}
    done_events: set[str] = set()
    next_kill = every_s
    settings = load_settings(redis_url=stack.redis_url, var_dir=stack.var_dir)
    while time.monotonic() < deadline:
        t = time.monotonic() - t0
        try:
            if "burst" not in done_events and t >= schedule["burst"]:
                entries = malformed_entries(settings.queue)
                r.lpush(settings.queue, *entries)
                chaos.events.append({"at": round(time.time(), 3), "event": "malformed_burst", "count": len(entries)})
                done_events.add("burst")
            if "freeze" not in done_events and t >= schedule["freeze"]:
                frozen = live.pop(chaos.busiest(live))
                chaos.strike(frozen, signal.SIGSTOP, "froze")
                live.append(chaos.start_worker())
                done_events.add("freeze")
            if "resume" not in done_events and frozen is not None and t >= schedule["resume"]:
                frozen.send_signal(signal.SIGCONT)
                chaos.events.append({"at": round(time.time(), 3), "event": "resumed", "pid": frozen.pid})
                live.append(frozen)
                done_events.add("resume")
            if "redis" not in done_events and t >= schedule["redis"]:
                assert stack.redis is not None
                stack.redis.restart()
                chaos.events.append({"at": round(time.time(), 3), "event": "redis_restarted"})
                console.print("restarted redis")
                done_events.add("redis")
            if t >= next_kill and live:
                victim = live.pop(chaos.busiest(live))
                chaos.strike(victim, signal.SIGKILL, "killed")
                live.append(chaos.start_worker())
                next_kill += every_s
            if len(done_events) == 4 and pending(r) == 0 and r.llen(settings.queue) == 0:
                return True
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # Redis is restarting: the scenario carries on
        time.sleep(0.2)
    return False


def pending(r: redis.Redis) -> int:
    return int(r.zcard(keys.PENDING))


def check(r: redis.Redis, client: Client, ids: list[str], struck: dict[str, float], invalid_sent: int,
          finished_in_time: bool) -> dict[str, Any]:
    """The checks: exactly one terminal state, nothing lost, one result, recovery, invalid dead-lettered."""
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), ["state", "result", "result_writes", "updated"])
        pipe.exists(keys.dead_letter(job_id))
    replies = pipe.execute()
    states: dict[str, int] = {}
    lost = duplicates = double_terminal = 0
    recovery: list[float] = []
    reclaim: list[float] = []
    for i, job_id in enumerate(ids):
        (state, result, writes, updated), has_dlq = replies[2 * i], replies[2 * i + 1]
        states[str(state)] = states.get(str(state), 0) + 1
        if state not in ("succeeded", "dead"):
            lost += 1
            continue
        if int(writes or 0) > 1:
            duplicates += 1
        if (state == "succeeded") != bool(result) or (state == "succeeded" and has_dlq) or (
                state == "dead" and not has_dlq):
            double_terminal += 1
        if job_id in struck:
            res = json.loads(result) if result else {}
            recovery.append(max(0.0, float(res.get("finished") or updated or 0) - struck[job_id]))
            if res.get("started"):
                reclaim.append(max(0.0, float(res["started"]) - struck[job_id]))
    invalid = len(client.dlq.list(reason=DeadReason.INVALID_PAYLOAD, limit=100000))
    out = {
        "jobs": len(ids), "states": states, "lost": lost, "duplicates": duplicates,
        "not_exactly_one_terminal": double_terminal, "reclaimed": len(recovery),
        "recovery_p95_s": round(percentile(recovery, 95), 2), "recovery_max_s": round(max(recovery, default=0.0), 2),
        "reclaim_p95_s": round(percentile(reclaim, 95), 2), "reclaim_max_s": round(max(reclaim, default=0.0), 2),
        "invalid_sent": invalid_sent, "invalid_dead_lettered": invalid, "finished_in_time": finished_in_time,
    }
    out["passed"] = bool(finished_in_time and lost == 0 and duplicates == 0 and double_terminal == 0
                         and invalid == invalid_sent)
    return out


def run_chaos(jobs: int = 5000, deadline_s: float = 600.0, as_json: bool = False, workers: int = 3,
              concurrency: int = 50, every_s: float = 10.0, latency_s: float = 0.3, lease_s: float | None = None,
              var_dir: Path | None = None) -> int:
    """Run the scenario and print the checks; 0 when every check passed, 1 otherwise."""
    stop_at = time.monotonic() + deadline_s
    base = load_settings()
    env = {"ASKQ_LOG_LEVEL": "warning", "ASKQ_BREAKER__COOLDOWN_S": "2"}
    if lease_s is not None:
        env |= {"ASKQ_LEASE_S": str(lease_s), "ASKQ_HEARTBEAT_S": str(lease_s / 6),
                "ASKQ_REAPER_INTERVAL_S": str(lease_s / 6)}
    lease = lease_s if lease_s is not None else base.lease_s
    root = var_dir or base.var_dir / "chaos"
    with Stack(root, env=env) as stack:
        stack.start_redis()
        assert stack.redis is not None
        stack.redis.stop()
        # A fresh store each run: the counts below are about this run's jobs only.
        for old in stack.redis.data_dir.glob("*.aof"):
            old.unlink()
        for old in (stack.redis.data_dir / "appendonlydir").glob("*"):
            old.unlink()
        stack.redis.start()
        stack.start_sim(FAULTS, latency_s=latency_s, jitter_s=latency_s / 2, seed=11)
        settings = load_settings(redis_url=stack.redis_url, var_dir=stack.var_dir,
                                 providers=default_providers(stack.sim_url))
        r = connect(settings, stack.redis_url)
        client = Client(settings, r)
        ids = client.submit_many([{"question": s.question} for s in make_specs(jobs, f"chaos{time.time()}")])
        console.print(f"chaos: {jobs} jobs, {workers} workers x {concurrency}, kill every {every_s} s, "
                      f"lease {lease} s, deadline {deadline_s} s")
        chaos = Chaos(stack, r, concurrency)
        finished = run_scenario(chaos, ids, stop_at, every_s, lease, workers)
        invalid_sent = len(malformed_entries(settings.queue))
        # Dead letters of the burst may still be in flight after the last job ended.
        wait_until(lambda: len(client.dlq.list(reason=DeadReason.INVALID_PAYLOAD, limit=100000)) >= invalid_sent,
                   max(1.0, min(10.0, stop_at - time.monotonic())))
        out = check(r, client, ids, chaos.struck, invalid_sent, finished)
        out["events"] = chaos.events
        client.close()
    if as_json:
        print(json.dumps(out, sort_keys=True))
    else:
        table = Table(title="askq chaos", show_header=False)
        for key in ("jobs", "states", "lost", "duplicates", "not_exactly_one_terminal", "reclaimed",
                    "recovery_p95_s", "recovery_max_s", "reclaim_p95_s", "reclaim_max_s",
                    "invalid_sent", "invalid_dead_lettered",
                    "finished_in_time", "passed"):
            table.add_row(key, str(out[key]))
        Console().print(table)
    return 0 if out["passed"] else 1
