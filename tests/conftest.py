"""Shared fixtures: a real Redis server per session, the simulator over HTTP, real worker processes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from askq.config.settings import Settings, load_settings
from askq.core import keys
from askq.core.redisserver import EmbeddedRedis
from askq.stack import Stack, default_providers

# Read before the ASKQ_* variables are cleared: browser tests then save their screenshots to docs/.
SCREENSHOTS = os.environ.get("ASKQ_TEST_SCREENSHOTS") == "1"

# Tests configure askq explicitly; nothing from the developer's shell leaks in.
for _key in [k for k in os.environ if k.startswith("ASKQ_")]:
    del os.environ[_key]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client on a freshly flushed database."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sim_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("sim"), redis_url="unused")
    stack.start_sim(latency_s=0.02)
    yield stack
    stack.stop()


class Sim:
    """Control of the running simulator: faults, reset, request counts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = url.rsplit("/v1", 1)[0]
        self.http = httpx.Client(timeout=10)

    def configure(self, config: dict[str, Any] | None = None) -> None:
        reply = self.http.put(f"{self.root}/_sim/faults", json=config or {"latency_s": 0.02})
        reply.raise_for_status()
        self.reset()

    def reset(self) -> None:
        self.http.post(f"{self.root}/_sim/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        reply = self.http.get(f"{self.root}/_sim/stats")
        reply.raise_for_status()
        return dict(reply.json())

    def requests(self, model: str) -> int:
        return int(self.stats()["requests"].get(model, 0))


@pytest.fixture
def sim(sim_stack: Stack) -> Iterator[Sim]:
    control = Sim(sim_stack.sim_url)
    control.configure()
    yield control
    control.configure()
    control.http.close()


@pytest.fixture
def settings(redis_server: EmbeddedRedis, sim: Sim, tmp_path: Path) -> Settings:
    """Settings for in-process code: the session Redis, the simulator, fast test timings."""
    return load_settings(
        redis_url=redis_server.url,
        var_dir=tmp_path,
        providers=default_providers(sim.url, timeout_s=2.0),
        lease_s=3.0,
        heartbeat_s=0.5,
        reaper_interval_s=0.5,
    )


# Environment for worker subprocesses: quick leases so recovery tests stay short.
FAST_ENV = {
    "ASKQ_LEASE_S": "3",
    "ASKQ_HEARTBEAT_S": "0.5",
    "ASKQ_REAPER_INTERVAL_S": "0.5",
    "ASKQ_LOG_LEVEL": "info",
}


@pytest.fixture
def stack(r: redis.Redis, redis_server: EmbeddedRedis, sim: Sim, tmp_path: Path) -> Iterator[Stack]:
    """A stack for starting real worker processes against the session Redis and simulator."""
    s = Stack(tmp_path / "stack", redis_url=redis_server.url, env=dict(FAST_ENV))
    s.sim_url = sim.url
    yield s
    s.stop()


def worker_named(r: redis.Redis, pid: int) -> str | None:
    """The name a worker process publishes (Celery's node name, as in Flower), found by its pid."""
    for name in r.zrange(keys.WORKERS, 0, -1):
        if r.hget(keys.worker(str(name)), "pid") == str(pid):
            return str(name)
    return None


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_workers(r: redis.Redis, count: int, timeout: float = 60.0) -> None:
    """Wait until `count` workers have sent a heartbeat."""
    wait_for(lambda: r.zcard(keys.WORKERS) >= count, timeout, what=f"{count} worker heartbeat(s)")
