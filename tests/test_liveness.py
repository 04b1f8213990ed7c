"""`askq workers`: a killed worker shows dead within three heartbeats, a stuck one stalled."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import redis

from askq.config.settings import Settings
from askq.core import keys
from askq.core.liveness import list_workers
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers


def _cli_workers(stack: Stack) -> dict[int, dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "askq", "workers", "--json"], env=stack.env(),
                         capture_output=True, text=True, check=True, timeout=60)
    return {w["pid"]: w for w in json.loads(out.stdout)}


def test_killed_worker_is_dead_and_stuck_worker_is_stalled(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    # Every tier hangs: a job holds its worker far past the 1 s deadline of the second worker.
    sim.configure({"latency_s": 0.02, "faults": [{"kind": "hang", "hang_s": 60}]})
    victim = stack.start_worker(concurrency=2)
    stuck = stack.start_worker(concurrency=2, ASKQ_JOB_DEADLINE_S="1")
    wait_workers(r, 2)
    def _workers(_: Stack) -> dict[int, dict[str, Any]]:
        return {w.pid: w.model_dump() for w in list_workers(r, settings) if w.pid is not None}

    first = _cli_workers(stack)
    assert first[victim.pid]["state"] == "alive" and first[stuck.pid]["state"] == "alive"

    stack.kill_worker(victim, signal.SIGKILL)
    # Three heartbeat intervals are 1.5 s here; the wait is generous, the state is what counts.
    seen = wait_for(lambda: (w := _workers(stack)) and w[victim.pid]["state"] == "dead" and w, 20,
                    interval=0.3, what="killed worker shown dead")
    assert seen[victim.pid]["heartbeat_age_s"] > 3 * 0.5
    assert seen[stuck.pid]["state"] == "alive"

    Client(settings).submit("Why is my account locked?")
    seen = wait_for(lambda: (w := _workers(stack)) and w[stuck.pid]["state"] == "stalled" and w, 30,
                    interval=0.3, what="stuck worker shown stalled")
    assert seen[stuck.pid]["inflight"] == 1
    assert seen[stuck.pid]["oldest_job_s"] > 1
    assert stuck.poll() is None
    shown = _cli_workers(stack)  # the operator's view agrees
    assert shown[victim.pid]["state"] == "dead" and shown[stuck.pid]["state"] == "stalled"
    stack.kill_worker(stuck, signal.SIGKILL)  # a warm shutdown would wait for the hung job


def test_dead_workers_leave_the_list_after_the_retention(stack: Stack, r: redis.Redis, settings: Settings) -> None:
    retention = {"ASKQ_WORKER_RETENTION_S": "4"}
    victims = [stack.start_worker(concurrency=2, **retention) for _ in range(2)]
    survivor = stack.start_worker(concurrency=2, **retention)
    wait_workers(r, 3)
    for victim in victims:
        stack.kill_worker(victim, signal.SIGKILL)
    # First shown dead, as operators expect of a killed worker ...
    wait_for(lambda: {w["state"] for p, w in _cli_workers(stack).items() if p in (victims[0].pid, victims[1].pid)}
             == {"dead"}, 20, interval=0.3, what="killed workers shown dead")
    # ... then gone, entry and details, while the live worker stays.
    wait_for(lambda: r.zcard(keys.WORKERS) == 1, 30, interval=0.3, what="dead workers removed")
    shown = _cli_workers(stack)
    assert list(shown) == [survivor.pid] and shown[survivor.pid]["state"] == "alive"
    assert r.keys(keys.worker("*")) == [keys.worker(str(r.zrange(keys.WORKERS, 0, -1)[0]))]
