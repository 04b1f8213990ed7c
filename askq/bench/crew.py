"""The chaos run's worker processes: started, struck, retired, and watched for deaths of their own.

Every process the chaos run ends on purpose (a scheduled `kill -9`, a SIGTERM between phases)
is remembered, so any other exit is a worker that died by itself: the check `worker_deaths`.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from rich.console import Console

from askq.core import keys
from askq.stack import Stack

console = Console(stderr=True, markup=False)  # "[phase]" prefixes are text, not styles


@dataclass
class Crew:
    """The live workers, what was done to whom and when, and who died unasked."""

    stack: Stack
    r: redis.Redis
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # pids the run itself ended (kill schedule, retirement between phases)
    ended_on_purpose: set[int] = field(default_factory=set)
    # job id -> time its worker was last killed or frozen while it held the job: a job struck
    # twice recovers from the second blow, the first one's recovery ended when it ran again
    struck: dict[str, float] = field(default_factory=dict)
    # job id -> how many of its runs the run itself ended (kills and freezes)
    strikes: dict[str, int] = field(default_factory=dict)
    # A blow never lands on a job this many runs were already taken from: the scenario must not
    # poison a job by itself, so that any poison record is a job askq wrongly gave up on.
    max_strikes: int = 2
    events: list[dict[str, Any]] = field(default_factory=list)
    deaths: list[dict[str, Any]] = field(default_factory=list)
    phase: str = ""
    # per-phase cap on replacing workers that died by themselves, so a worker-killing entry
    # cannot turn the run into a restart loop until the deadline
    replacements_left: int = 0
    _watched: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _env: dict[str, str] = field(default_factory=dict)
    _concurrency: int = 0

    def event(self, what: str, **fields: Any) -> None:
        self.events.append({"at": round(time.time(), 3), "phase": self.phase, "event": what, **fields})

    def staff(self, count: int, concurrency: int, replacements: int = 3, **env: str) -> None:
        """Have `count` live workers with these settings: the current ones are kept if they have
        them (a worker takes seconds to start), the others retired."""
        if (dict(env), concurrency) != (self._env, self._concurrency):
            self.retire()
        while len(self.live) > count:
            extra = self.live.pop()
            self.ended_on_purpose.add(extra.pid)
            self.stack.kill_worker(extra, signal.SIGTERM)
        self._env, self._concurrency, self.replacements_left = dict(env), concurrency, replacements
        while len(self.live) < count:
            self.hire()

    def hire(self) -> subprocess.Popen[bytes]:
        proc = self.stack.start_worker(concurrency=self._concurrency, **self._env)
        self.live.append(proc)
        self._watched.append(proc)
        return proc

    def retire(self) -> None:
        """End every live worker on purpose (SIGCONT first, then SIGTERM: a warm shutdown)."""
        for proc in self.live:
            self.ended_on_purpose.add(proc.pid)
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            self.stack.kill_worker(proc, signal.SIGTERM)
        self.live.clear()

    def wait_consuming(self, timeout_s: float) -> None:
        """Wait until every live worker has published a heartbeat (it is consuming)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = set(self.worker_names().values())
            if all(p.pid in pids for p in self.live):
                return
            self.watch()
            time.sleep(0.2)

    def worker_names(self) -> dict[str, int]:
        """Worker name -> pid, from the heartbeat records."""
        names = [str(n) for n in self.r.zrange(keys.WORKERS, 0, -1)]
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hget(keys.worker(name), "pid")
        return {n: int(pid) for n, pid in zip(names, pipe.execute(), strict=True) if pid}

    def inflight(self, proc: subprocess.Popen[bytes]) -> int:
        """Jobs the worker says it holds (its last heartbeat); 0 when it has no record."""
        for name, pid in self.worker_names().items():
            if pid == proc.pid:
                return int(self.r.hget(keys.worker(name), "inflight") or 0)
        return 0

    def held_by(self, proc: subprocess.Popen[bytes]) -> list[str]:
        """Jobs running under this worker process right now (per the job store)."""
        ids = [str(i) for i in self.r.zrange(keys.LEASES, 0, -1)]
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), ["state", "worker"])
        # A worker's name is its Celery node name: its pid is in its heartbeat record.
        names = {name for name, pid in self.worker_names().items() if pid == proc.pid}
        return [i for i, (state, worker) in zip(ids, pipe.execute(), strict=True)
                if state == "running" and worker in names]

    def busiest(self) -> subprocess.Popen[bytes] | None:
        """The live worker holding the most jobs (a random one among equals), None if every one
        holds a job already struck `max_strikes` times."""
        held = []
        for i, proc in enumerate(self.live):
            jobs = self.held_by(proc)
            if not any(self.strikes.get(j, 0) >= self.max_strikes for j in jobs):
                held.append((len(jobs), random.random(), i))
        return self.live[max(held)[2]] if held else None

    def strike(self, proc: subprocess.Popen[bytes], sig: int, what: str) -> list[str]:
        """Kill or freeze a worker; its jobs' recovery is timed from now. Returns the jobs it held."""
        now = time.time()
        held = self.held_by(proc)
        for job_id in held:
            self.struck[job_id] = now
            self.strikes[job_id] = self.strikes.get(job_id, 0) + 1
        if sig == signal.SIGKILL:
            self.ended_on_purpose.add(proc.pid)
        # A frozen worker is out of the live set (no second blow) until it is resumed.
        self.live.remove(proc)
        self.stack.kill_worker(proc, sig)
        self.event(what, pid=proc.pid, held=len(held))
        console.print(f"[{self.phase}] {what} worker {proc.pid} holding {len(held)} job(s)")
        return held

    def resume(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        self.live.append(proc)
        self.event("resumed", pid=proc.pid)
        console.print(f"[{self.phase}] resumed worker {proc.pid}")

    def watch(self) -> int:
        """Record workers that exited unasked and replace them (within the cap); how many died now."""
        died = 0
        for proc in list(self._watched):
            code = proc.poll()
            if code is None:
                continue
            self._watched.remove(proc)
            if proc.pid in self.ended_on_purpose:
                continue
            died += 1
            self.deaths.append({"phase": self.phase, "pid": proc.pid, "exit": code})
            self.event("worker_died", pid=proc.pid, exit=code)
            console.print(f"[{self.phase}] worker {proc.pid} died by itself (exit {code})")
            if proc in self.live:
                self.live.remove(proc)
                if self.replacements_left > 0:
                    self.replacements_left -= 1
                    self.hire()
        return died
