"""Many hosts: Redis, two worker hosts and a producer in separate network namespaces.

Two scenarios, each on a fresh topology (askq/bench/netns.py) and a fresh Redis:

- partition: worker host `a` loses the network for partition_s seconds while it runs jobs, then
  comes back. Its jobs must be finished by host `b` (recovery, measured on Redis's clock from
  the cut to their result), none lost, none answered twice; the LLM calls `a` made for jobs
  `b` had to run again are counted as wasted.
- skew: host `a`'s clock runs skew_s ahead, host `b`'s skew_s behind (libfaketime). No lease
  may look expired early, so no job is reclaimed from a live worker and no call is wasted.

Each worker host reaches its own LLM simulator on its loopback (a provider is on the internet,
not behind the Redis link a partition cuts), so a cut-off worker keeps calling the model, as a
real one would. Every printed promise is a check `{value, bound, passed}` (askq/bench/verdict.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from askq.bench import faketime
from askq.bench.netns import OBSERVER, Topology
from askq.bench.verdict import check, recovery_bound_s
from askq.config.settings import Settings
from askq.core import keys
from askq.core.redisserver import redis_server_binary
from askq.core.stats import percentile
from askq.stack import default_providers

REDIS_PORT = 6379
SCENARIOS = ("partition", "skew")

# Run by the producer host: submits the questions it reads on stdin, prints the job ids.
_PRODUCER = """
import json, sys
from askq.producers.client import Client
questions = json.load(sys.stdin)
print(json.dumps(Client().submit_many([{"question": q} for q in questions])))
"""
# Run inside a worker host: that host's simulator's call counts (only it can reach it).
_SIM_STATS = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


@dataclass(frozen=True, slots=True)
class HostsOptions:
    """One many-hosts run. lease_s None: the settings' defaults (heartbeat, reaper too)."""

    jobs: int = 60
    partition_s: float = 30.0
    skew_s: float = 30.0
    latency_s: float = 2.0
    concurrency: int = 8
    lease_s: float | None = None
    scenarios: tuple[str, ...] = SCENARIOS
    deadline_s: float = 300.0

    def timings(self) -> dict[str, float]:
        fields = Settings.model_fields
        if self.lease_s is None:
            return {name: float(fields[name].default) for name in ("lease_s", "heartbeat_s", "reaper_interval_s")}
        return {"lease_s": self.lease_s, "heartbeat_s": self.lease_s / 6, "reaper_interval_s": self.lease_s / 6}


class Cluster:
    """The processes of one scenario, each in its host's namespace; stop() ends all of them."""

    def __init__(self, topo: Topology, var_dir: Path, opts: HostsOptions) -> None:
        self.topo, self.var_dir, self.opts = topo, var_dir, opts
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sims: dict[str, str] = {}
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.r: redis.Redis | None = None

    def _spawn(self, host: str, name: str, args: list[str], env: dict[str, str] | None = None,
               stdout: int | None = None) -> subprocess.Popen[bytes]:
        log = open(self.var_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen([*self.topo.run_in(host), *args], env=env, stdout=stdout or log,
                                stderr=subprocess.STDOUT if stdout is None else log)
        log.close()
        self.procs.append(proc)
        return proc

    def start_redis(self) -> redis.Redis:
        data = self.var_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self._spawn("hub", "redis", [redis_server_binary(), "--port", str(REDIS_PORT), "--bind", "0.0.0.0",
                                     "--protected-mode", "no", "--dir", str(data), "--appendonly", "yes",
                                     "--save", "", "--maxmemory-policy", "noeviction"])
        self.r = redis.Redis(host=self.topo.hub_address(OBSERVER), port=REDIS_PORT, decode_responses=True,
                             socket_timeout=5)
        _until(lambda: _pings(self.r), 15, "Redis in the hub namespace")
        return self.r

    def start_sim(self, host: str) -> str:
        proc = self._spawn(host, f"sim-{host}", [sys.executable, "-m", "askq", "sim", "--port", "0",
                                                 "--latency", str(self.opts.latency_s)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError(f"simulator on host {host} did not start: {line!r}")
        self.sims[host] = line.strip().rsplit(" ", 1)[-1]
        return self.sims[host]

    def env(self, host: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
        env |= {"ASKQ_REDIS_URL": f"redis://{self.topo.hub_address(host)}:{REDIS_PORT}/0",
                "ASKQ_VAR_DIR": str(self.var_dir / host), "ASKQ_LOG_LEVEL": "info"}
        env |= {f"ASKQ_{k.upper()}": str(v) for k, v in self.opts.timings().items()}
        if host in self.sims:
            env["ASKQ_PROVIDERS"] = json.dumps(default_providers(self.sims[host]))
        return env | extra

    def start_worker(self, host: str, skew_s: float = 0.0) -> subprocess.Popen[bytes]:
        self.start_sim(host)
        extra = faketime.skewed_env(skew_s) if skew_s else {}
        proc = self._spawn(host, f"worker-{host}", [sys.executable, "-m", "askq", "worker", "--concurrency",
                                                    str(self.opts.concurrency), "--name", f"host-{host}"],
                           self.env(host, **extra))
        self.workers[host] = proc
        return proc

    def worker_name(self, host: str) -> str:
        """The name a worker beats under (Celery's node name), found by the pid its heartbeat record
        carries (`ip netns exec` execs the program: same pid)."""
        names = [str(n) for n in self.redis.zrange(keys.WORKERS, 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(keys.worker(name), "pid")
        pid = str(self.workers[host].pid)
        return next((n for n, p in zip(names, pipe.execute(), strict=True) if str(p) == pid), "")

    @property
    def redis(self) -> redis.Redis:
        assert self.r is not None
        return self.r

    def submit(self, count: int, tag: str) -> list[str]:
        questions = [f"{tag} question {i}: where is my parcel?" for i in range(count)]
        done = subprocess.run([*self.topo.run_in("p"), sys.executable, "-c", _PRODUCER], input=json.dumps(questions),
                              env=self.env("p"), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"producer failed: {done.stderr.strip()[-500:]}")
        return list(json.loads(done.stdout))

    def llm_calls(self) -> int:
        total = 0
        for host, url in self.sims.items():
            stats_url = url.rsplit("/v1", 1)[0] + "/_sim/stats"
            done = subprocess.run([*self.topo.run_in(host), sys.executable, "-c", _SIM_STATS, stats_url],
                                  capture_output=True, text=True, timeout=30)
            total += sum(json.loads(done.stdout)["requests"].values())
        return total

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if self.r is not None:
            self.r.close()


def run_hosts(opts: HostsOptions, var_dir: Path) -> dict[str, Any]:
    """Run the scenarios; one object with every check, and the headline figures."""
    out: dict[str, Any] = {"scenarios": {}, "checks": {}, "settings": opts.timings()}
    for name in opts.scenarios:
        scenario_dir = var_dir / f"{name}-{int(time.time())}"
        scenario_dir.mkdir(parents=True, exist_ok=True)
        try:
            figures = _scenario(name, opts, scenario_dir)
        except Exception as exc:  # one broken scenario must not hide the other's checks
            figures = {"error": f"{type(exc).__name__}: {exc}", "checks": {"ran": check("ran", 1, 0)}}
        out["scenarios"][name] = figures
        out["checks"] |= {f"{name}_{c}": v for c, v in figures["checks"].items()}
    scenarios = out["scenarios"].values()
    out["lost"] = sum(s.get("lost", 0) for s in scenarios)
    out["duplicates"] = sum(s.get("duplicates", 0) for s in scenarios)
    out["wasted_calls"] = sum(s.get("wasted_calls", 0) for s in scenarios)
    partition = out["scenarios"].get("partition", {})
    out["recovery_max_s"] = partition.get("recovery_max_s", 0.0)
    out["recovery_p95_s"] = partition.get("recovery_p95_s", 0.0)
    out["passed"] = all(c["passed"] for c in out["checks"].values())
    return out


def _scenario(name: str, opts: HostsOptions, var_dir: Path) -> dict[str, Any]:
    with Topology(hosts=("a", "b", "p")) as topo:
        cluster = Cluster(topo, var_dir, opts)
        try:
            cluster.start_redis()
            return _partition(cluster, opts) if name == "partition" else _skew(cluster, opts)
        finally:
            cluster.stop()


def _partition(cluster: Cluster, opts: HostsOptions) -> dict[str, Any]:
    r = cluster.redis
    cluster.start_worker("a")
    cluster.start_worker("b")
    _until(lambda: r.zcard(keys.WORKERS) >= 2, 90, "both worker hosts' heartbeats")
    ids = cluster.submit(opts.jobs, "partition")
    a_name = cluster.worker_name("a")
    held = _until(lambda: _running_on(r, ids, a_name), 60, "host a running jobs")
    cut_at = _server_now(r)
    cluster.topo.partition("a")
    try:
        time.sleep(opts.partition_s)
    finally:
        cluster.topo.heal("a")
    figures = _outcome(cluster, ids, opts)
    recovery = [_finished(r, j) - cut_at for j in held]
    recovery = [max(0.0, s) for s in recovery if s == s]  # NaN: not finished (counted as lost)
    t = opts.timings()
    bound = recovery_bound_s(t["lease_s"], t["reaper_interval_s"])
    figures |= {"partitioned_s": opts.partition_s, "held_at_cut": len(held),
                "recovery_p95_s": round(percentile(recovery, 95), 2),
                "recovery_max_s": round(max(recovery, default=0.0), 2)}
    figures["checks"] |= {
        "recovery_max_s": check("recovery_max_s", figures["recovery_max_s"], bound),
        # A cut that caught no job running proves nothing: a minimum.
        "held_at_cut": {"value": len(held), "bound": 1, "passed": len(held) >= 1, "at_least": True},
        # Only the jobs `a` held can have been run twice.
        "wasted_calls": check("wasted_calls", figures["wasted_calls"], len(held)),
    }
    return figures


def _skew(cluster: Cluster, opts: HostsOptions) -> dict[str, Any]:
    r = cluster.redis
    # The host ahead starts first and takes the reaper's lock: on its clock every lease written
    # by the host behind would have expired long ago, were leases judged on host clocks.
    cluster.start_worker("a", +opts.skew_s)
    _until(lambda: r.get(keys.REAPER_LOCK), 90, "host a holding the reaper lock")
    cluster.start_worker("b", -opts.skew_s)
    _until(lambda: r.zcard(keys.WORKERS) >= 2, 90, "both worker hosts' heartbeats")
    ids = cluster.submit(opts.jobs, "skew")
    figures = _outcome(cluster, ids, opts)
    now = _server_now(r)
    entries: list[tuple[str, float]] = r.zrange(keys.WORKERS, 0, -1, withscores=True)  # type: ignore[assignment]
    beats = [now - score for _, score in entries]
    figures |= {"skew_s": opts.skew_s, "heartbeat_age_s": [round(b, 2) for b in beats]}
    figures["checks"] |= {
        "reclaimed": check("reclaimed", figures["reclaimed"], 0),
        "wasted_calls": check("wasted_calls", figures["wasted_calls"], 0),
        # Stamped on Redis's clock: no beat 30 s in the future or the past.
        "heartbeat_off_s": check("heartbeat_off_s", round(max(abs(b) for b in beats), 2),
                                 opts.timings()["heartbeat_s"] * 3),
        "results_in_future": check("results_in_future", sum(_finished(r, j) > now + 1 for j in ids), 0),
    }
    return figures


def _outcome(cluster: Cluster, ids: list[str], opts: HostsOptions) -> dict[str, Any]:
    """Wait for every job to end; lost, duplicates, reclaims and wasted LLM calls."""
    r = cluster.redis

    def ended() -> bool:
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        return all(s in ("succeeded", "dead", "cancelled", "expired") for s in pipe.execute())

    deadline_s = opts.deadline_s
    with contextlib.suppress(TimeoutError):  # what did not end is counted as lost
        _until(ended, deadline_s, "every job to end")
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), ["state", "result_writes", "delivery"])
    rows = pipe.execute()
    lost = sum(1 for state, _, _ in rows if state != "succeeded")
    duplicates = sum(1 for _, writes, _ in rows if int(writes or 0) > 1)
    reclaimed = sum(1 for _, _, delivery in rows if int(delivery or 1) > 1)
    # Each job needs one call on a healthy provider: every call beyond that was a double run.
    wasted = max(0, cluster.llm_calls() - len(ids))
    return {"jobs": len(ids), "lost": lost, "duplicates": duplicates, "reclaimed": reclaimed, "wasted_calls": wasted,
            "checks": {"lost": check("lost", lost, 0), "duplicates": check("duplicates", duplicates, 0)}}


def _running_on(r: redis.Redis, ids: list[str], worker: str) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), ["state", "worker"])
    return [j for j, (state, w) in zip(ids, pipe.execute(), strict=True) if state == "running" and w == worker]


def _finished(r: redis.Redis, job_id: str) -> float:
    raw = r.hget(keys.job(job_id), "result")
    return float(json.loads(raw)["finished"]) if raw else float("nan")


def _server_now(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return float(seconds) + micros / 1e6


def _pings(r: redis.Redis | None) -> bool:
    try:
        return bool(r is not None and r.ping())
    except redis.RedisError:
        return False


def _until(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


def run_hosts_command(opts: HostsOptions, var_dir: Path, as_json: bool) -> int:
    """`askq chaos --hosts`: run, print the checks (a table, or one JSON object); 0 when all passed."""
    from askq.bench.netns import unavailable

    why = unavailable()
    if why is not None:
        print(f"askq chaos --hosts: cannot make network namespaces here: {why}", file=sys.stderr)
        return 2
    if "skew" in opts.scenarios and faketime.library() is None:
        print("askq chaos --hosts: libfaketime is missing (apt-get install faketime)", file=sys.stderr)
        return 2
    out = run_hosts(opts, var_dir)
    if as_json:
        print(json.dumps(out, sort_keys=True, default=str))
        return 0 if out["passed"] else 1
    from rich.console import Console
    from rich.table import Table

    table = Table(title="askq chaos --hosts: checks")
    for col in ("check", "value", "bound", "verdict"):
        table.add_column(col)
    for name, c in out["checks"].items():
        rule = "≥" if c.get("at_least") else "≤"
        table.add_row(name, str(c["value"]), f"{rule} {c['bound']}", "pass" if c["passed"] else "[red]FAIL[/red]")
    table.add_row("passed", "", "", "pass" if out["passed"] else "[red]FAIL[/red]")
    Console().print(table)
    for name, figures in out["scenarios"].items():
        shown = {k: v for k, v in figures.items() if k != "checks"}
        Console().print(f"{name}: {json.dumps(shown, default=str)}")
    return 0 if out["passed"] else 1
