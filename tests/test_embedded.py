"""The embedded Redis: askq processes started at the same moment share one server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from askq.core.redisserver import EmbeddedRedis
from askq.stack import Stack
from tests.conftest import FAST_ENV, Sim, wait_workers


def test_concurrent_processes_agree_on_one_embedded_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | {"ASKQ_VAR_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "askq", "redis", "url"], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        urls = {proc.communicate(timeout=60)[0].strip() for proc in procs}
        assert len(urls) == 1
        (url,) = urls
        assert url.startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(url).ping()
        assert (tmp_path / "redis" / "appendonly.aof").exists() or (tmp_path / "redis" / "appendonlydir").exists()
    finally:
        out = subprocess.run([sys.executable, "-m", "askq", "redis", "stop"], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "stopped"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | {"ASKQ_VAR_DIR": str(tmp_path)} | extra


def _askq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "askq", *args], env=env, capture_output=True, text=True, timeout=60)


def test_redis_stop_leaves_a_process_that_reused_the_pid_alone(tmp_path: Path) -> None:
    """The pid in redis.json may belong to another process by now: it must not be signalled."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        state = {"url": "redis://127.0.0.1:1/0", "port": 1, "pid": bystander.pid,
                 "create_time": psutil.Process(bystander.pid).create_time()}
        (tmp_path / "redis.json").write_text(json.dumps(state))
        out = _askq(_env(tmp_path), "redis", "stop")
        time.sleep(0.2)  # a SIGTERM, had one been sent, would have ended `sleep` by now
        assert bystander.poll() is None, "askq redis stop killed a process that is not its redis-server"
        assert out.returncode == 1
        assert f"process {bystander.pid} is 'sleep', not a redis-server" in out.stdout
        assert (tmp_path / "redis.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_redis_stop_leaves_another_redis_server_alone(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    """A redis-server, but not the recorded one (another port): not ours to stop."""
    assert redis_server.proc is not None
    state = {"url": "redis://127.0.0.1:1/0", "port": 1, "pid": redis_server.proc.pid}
    (tmp_path / "redis.json").write_text(json.dumps(state))
    out = _askq(_env(tmp_path), "redis", "stop")
    assert out.returncode == 1 and "not the one on port 1" in out.stdout
    assert redis.Redis.from_url(redis_server.url).ping()


def test_redis_stop_with_a_corrupt_state_file_says_so_and_signals_nothing(tmp_path: Path) -> None:
    """A hand-edited or damaged redis.json (a negative, zero or huge pid) is refused in one line."""
    for pid in (-1, 0, 2**40, 2**64, 4.5, "123"):
        state = {"url": "redis://127.0.0.1:1/0", "port": 1, "pid": pid}
        (tmp_path / "redis.json").write_text(json.dumps(state))
        out = _askq(_env(tmp_path), "redis", "stop")
        assert out.returncode == 1, (pid, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr, (pid, out.stderr)
        assert "names no pid" in out.stdout, (pid, out.stdout)
        assert (tmp_path / "redis.json").exists()


def _embedded_stack(tmp_path: Path, sim: Sim) -> Stack:
    """A stack with no ASKQ_REDIS_URL: its processes find (or start) the embedded Redis themselves."""
    stack = Stack(tmp_path, env=dict(FAST_ENV))
    stack.sim_url = sim.url
    return stack


def _kill_recorded_server(tmp_path: Path) -> int:
    state = json.loads((tmp_path / "redis.json").read_text())
    proc = psutil.Process(state["pid"])
    proc.kill()
    proc.wait(10)
    return int(state["port"])


def test_killed_embedded_redis_comes_back_on_its_address_and_the_worker_follows(tmp_path: Path, sim: Sim) -> None:
    stack = _embedded_stack(tmp_path, sim)
    env = stack.env()
    try:
        url = _askq(env, "redis", "url").stdout.strip()
        worker = stack.start_worker(concurrency=4)
        client = redis.Redis.from_url(url, decode_responses=True)
        wait_workers(client, 1)
        port = _kill_recorded_server(tmp_path)
        submitted = _askq(env, "submit", "Where is my parcel?")
        assert submitted.returncode == 0, submitted.stderr
        assert f"127.0.0.1:{port}" in submitted.stderr  # started again, on the same address
        assert _askq(env, "redis", "url").stdout.strip() == url
        waited = _askq(env, "wait", submitted.stdout.strip(), "--timeout", "45")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert json.loads(waited.stdout)["state"] == "succeeded"
        assert worker.poll() is None
    finally:
        stack.stop()
        _askq(env, "redis", "stop")


def test_worker_exits_when_the_embedded_redis_came_back_elsewhere(tmp_path: Path, sim: Sim) -> None:
    """The old port is taken by something else: the server moves, and a worker left on the old
    address exits (to be restarted on the new one) instead of idling there for ever."""
    stack = _embedded_stack(tmp_path, sim)
    env = stack.env()
    squatter = socket.socket()
    try:
        url = _askq(env, "redis", "url").stdout.strip()
        worker = stack.start_worker(concurrency=4)
        wait_workers(redis.Redis.from_url(url), 1)
        port = _kill_recorded_server(tmp_path)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        moved = _askq(env, "redis", "url").stdout.strip()
        assert moved and moved != url
        assert worker.wait(30) != 0
        assert "redis_moved" in (tmp_path / "worker0.log").read_text()
        restarted = stack.start_worker(concurrency=4)
        wait_workers(redis.Redis.from_url(moved), 1)
        submitted = _askq(env, "submit", "Where is my parcel?")
        waited = _askq(env, "wait", submitted.stdout.strip(), "--timeout", "45")
        assert json.loads(waited.stdout)["state"] == "succeeded"
        assert restarted.poll() is None
    finally:
        squatter.close()
        stack.stop()
        _askq(env, "redis", "stop")


def test_a_frozen_embedded_redis_is_reported_not_replaced(tmp_path: Path) -> None:
    """A second server beside a silent one would split the deployment: say so instead."""
    env = _env(tmp_path)
    url = _askq(env, "redis", "url").stdout.strip()
    server = psutil.Process(json.loads((tmp_path / "redis.json").read_text())["pid"])
    server.suspend()
    try:
        out = _askq(env, "submit", "Is anyone there?")
        assert out.returncode == 2
        assert "is running but does not answer" in out.stderr and "Traceback" not in out.stderr
        assert json.loads((tmp_path / "redis.json").read_text())["url"] == url
    finally:
        server.resume()
        assert _askq(env, "redis", "stop").stdout.strip() == "stopped"


def test_a_port_taken_between_choosing_and_binding_is_chosen_again(tmp_path: Path) -> None:
    """free_port() can lose its port to another process before the server binds it (parallel test
    runs did): a port askq chose is chosen again; a port the caller asked for is an error."""
    from askq.core.redisserver import EmbeddedRedis
    from askq.errors import EmbeddedRedisError

    server = EmbeddedRedis(tmp_path / "chosen", appendonly=False)
    taken = server.port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.port != taken and redis.Redis.from_url(server.url).ping()
        asked = EmbeddedRedis(tmp_path / "asked", port=taken, appendonly=False)
        with pytest.raises(EmbeddedRedisError, match="exited"):
            asked.start()


def test_a_foreign_server_on_the_recorded_port_is_not_taken_for_the_embedded_one(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """The embedded Redis died (a reboot); another Redis now listens on its recorded port. askq
    must not put its jobs into that server: it starts its own elsewhere and says so."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    state = {"url": redis_server.url, "port": port, "pid": gone.pid, "create_time": time.time() - 60}
    (tmp_path / "redis.json").write_text(json.dumps(state))
    env = _env(tmp_path)
    try:
        out = _askq(env, "redis", "url")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() != redis_server.url and "started the embedded Redis" in out.stderr
        assert redis.Redis.from_url(out.stdout.strip()).ping()
    finally:
        _askq(env, "redis", "stop")
