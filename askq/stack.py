"""Starts and stops the processes of a local askq stack: embedded Redis, simulator, workers.

The demo, the benchmarks, the chaos run and the integration tests all run the real thing
through this one module: real redis-server, the simulator over HTTP, Celery worker processes
that can be killed, frozen and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from askq.core.redisserver import EmbeddedRedis, free_port


class Stack:
    """A set of child processes that share one Redis; stop() ends all of them."""

    def __init__(self, var_dir: Path, env: dict[str, str] | None = None, redis_url: str | None = None) -> None:
        self.var_dir = Path(var_dir).resolve()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.redis: EmbeddedRedis | None = None
        self.redis_url = redis_url
        self.sim: subprocess.Popen[str] | None = None
        self.sim_url = ""
        self.workers: list[subprocess.Popen[bytes]] = []
        # Other services of the stack (Flower, the API): stopped with everything else.
        self.services: list[subprocess.Popen[bytes]] = []
        # Every askq command line this stack ran, written to launched.json: docker-compose.yml
        # must only run commands the local stack really runs (tests/test_demo.py checks it).
        self.launched: list[list[str]] = []
        self.extra_env = dict(env or {})

    def start_redis(self) -> str:
        if self.redis_url is None:
            self.redis = EmbeddedRedis(self.var_dir).start()
            self.redis_url = self.redis.url
        return self.redis_url

    def start_sim(self, faults: dict[str, Any] | None = None, latency_s: float = 0.05, jitter_s: float = 0.0,
                  seed: int | None = None) -> str:
        port = free_port()
        # `askq sim`, the very command docker-compose.yml runs for its simulator service.
        args = [sys.executable, "-m", "askq", "sim", "--port", str(port), "--latency", str(latency_s),
                "--jitter", str(jitter_s)]
        if faults:
            args += ["--faults", json.dumps(faults)]
        if seed is not None:
            args += ["--seed", str(seed)]
        log = open(self.var_dir / "sim.log", "a")  # noqa: SIM115 - handed to the child
        self._record(args)
        self.sim = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        assert self.sim.stdout is not None
        line = self.sim.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}; see {self.var_dir}/sim.log")
        self.sim_url = line.strip().rsplit(" ", 1)[-1]
        return self.sim_url

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment for askq child processes: this stack's Redis and simulator."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
        env["ASKQ_VAR_DIR"] = str(self.var_dir)
        if self.redis_url:
            env["ASKQ_REDIS_URL"] = self.redis_url
        if self.sim_url:
            env["ASKQ_PROVIDERS"] = json.dumps(default_providers(self.sim_url))
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def start_worker(self, concurrency: int = 50, name: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        index = len(self.workers)
        args = [sys.executable, "-m", "askq", "worker", "--concurrency", str(concurrency),
                "--name", name or f"w{index}-{os.getpid()}"]
        self._record(args)
        proc = self.spawn(f"worker{index}", args, self.env(**env))
        self.workers.append(proc)
        return proc

    def start_service(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        """Start another askq command (`askq flower`, `askq api`) against this stack's Redis."""
        command = [sys.executable, "-m", "askq", *args]
        self._record(command)
        proc = self.spawn(name, command, self.env(**env))
        self.services.append(proc)
        return proc

    def spawn(self, log_name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start a child process with its output appended to <var_dir>/<log_name>.log."""
        log = open(self.var_dir / f"{log_name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return proc

    def _record(self, args: list[str]) -> None:
        self.launched.append(["askq", *args[3:]])
        (self.var_dir / "launched.json").write_text(json.dumps(self.launched))

    def kill_worker(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def stop(self) -> None:
        for proc in self.services:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.workers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers.clear()
        for proc in self.services:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.services.clear()
        if self.sim and self.sim.poll() is None:
            self.sim.terminate()
            try:
                self.sim.wait(5)
            except subprocess.TimeoutExpired:
                self.sim.kill()
        self.sim = None
        if self.redis:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_providers(sim_url: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The two-tier ladder against a simulator: primary, then a secondary with a short prompt."""
    return [
        {"name": "primary", "base_url": sim_url, "model": "primary", "timeout_s": timeout_s},
        {"name": "secondary", "base_url": sim_url, "model": "secondary", "timeout_s": timeout_s,
         "prompt": "short", "retry": {"max_attempts": 2}},
    ]
