"""`askq up`: the whole local stack in the foreground, where every other askq command finds it.

The embedded Redis of this directory (var/redis.json, the one `askq submit` and the rest use),
the simulator on the port the default settings name (so a worker started by hand reaches it
too), one worker, the HTTP API and Flower on their configured ports. Children get the same
settings as any askq command run here (environment and .env). Ctrl-C, SIGTERM or a child
dying stops what this command started, and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from askq.config.settings import SIM_PORT, SIM_URL, Settings, load_settings
from askq.core.redisserver import discover, ensure_url, stop_if_unused
from askq.errors import AskqError
from askq.stack import Stack

START_TIMEOUT_S = 60.0


def say(line: str) -> None:
    """A line for the person at the terminal (stderr: stdout stays free), never wrapped."""
    print(line, file=sys.stderr, flush=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def _free_or_fail(port: int, what: str, option: str) -> None:
    if _listening(port):
        raise AskqError(f"port {port} for {what} is in use (is `askq up` already running here?): stop what "
                        f"listens there, or give {option} another port")


def _wait_until(predicate: Callable[[], bool], what: str, stack: Stack, log: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [p for p in [*stack.workers, *stack.services] if p.poll() is not None]
        if dead:
            break
        time.sleep(0.2)
    raise AskqError(f"{what} did not start; see {stack.var_dir / log}")


def _child_env(settings: Settings, sim_port: int) -> dict[str, str]:
    """What a child needs to be configured as this command is: the same ASKQ_* settings and var
    dir, and the simulator's port when it is not the one the settings name."""
    env = {k: v for k, v in os.environ.items() if k.startswith("ASKQ_")}
    env["ASKQ_VAR_DIR"] = str(settings.var_dir.resolve())
    if sim_port != SIM_PORT:
        moved = f"http://127.0.0.1:{sim_port}/v1"
        providers = []
        for p in settings.providers:
            values = p.model_dump(mode="json") | {"api_key": p.api_key.get_secret_value()}
            if p.base_url.rstrip("/") == SIM_URL:
                values["base_url"] = moved
            providers.append(values)
        env["ASKQ_PROVIDERS"] = json.dumps(providers)
    return env


def run_up(sim_port: int = SIM_PORT) -> int:
    settings = load_settings()
    api_port, flower_port = settings.api.port, settings.flower.port
    # The simulator stands in for the providers the default settings name (at SIM_URL).
    uses_sim = any(p.base_url.rstrip("/") == SIM_URL for p in settings.providers)
    sim_running = uses_sim and _answers(f"http://127.0.0.1:{sim_port}/_sim/health")
    _free_or_fail(api_port, "the HTTP API", "ASKQ_API__PORT")
    _free_or_fail(flower_port, "Flower", "ASKQ_FLOWER__PORT")
    if uses_sim and not sim_running:
        _free_or_fail(sim_port, "the simulator", "--sim-port")

    configured = settings.redis_url.get_secret_value() if settings.redis_url else None
    # Ours to stop at the end only if this command started it and no other askq process (a
    # demo, a worker started by hand) is connected to it by then.
    started_redis = configured is None and discover(settings.var_dir) is None
    redis_url = ensure_url(configured, settings.var_dir)
    user = settings.flower.user or "askq"
    password = settings.flower.password.get_secret_value() if settings.flower.password else secrets.token_urlsafe(12)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    stack = Stack(settings.var_dir / "up", env=_child_env(settings, sim_port))
    try:
        if uses_sim and not sim_running:
            stack.start_service("sim", ["sim", "--port", str(sim_port)])
            _wait_until(lambda: _answers(f"http://127.0.0.1:{sim_port}/_sim/health"), "the simulator", stack,
                        "sim.log")
        stack.start_worker(concurrency=settings.worker_concurrency, name="up")
        stack.start_service("api", ["api", "--port", str(api_port)])
        stack.start_service("flower", ["flower", "--port", str(flower_port)],
                            ASKQ_FLOWER__USER=user, ASKQ_FLOWER__PASSWORD=password)
        _wait_until(lambda: _answers(f"http://127.0.0.1:{api_port}/healthz"), "the HTTP API", stack, "api.log")
        _wait_until(lambda: _listening(flower_port), "Flower", stack, "flower.log")
        _print_urls(settings, redis_url, sim_port if uses_sim else None, user, password, stack.var_dir)
        return _watch(stack)
    except KeyboardInterrupt:
        return 0
    finally:
        # Stopping is bounded (each child has a deadline): a second Ctrl-C must not cut it short
        # and leave half the stack running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping what `askq up` started ...")
        stack.stop()
        if started_redis:
            stop_if_unused(settings.var_dir)


def _print_urls(settings: Settings, redis_url: str, sim_port: int | None, user: str, password: str,
                logs: Path) -> None:
    api, flower = f"http://127.0.0.1:{settings.api.port}", f"http://127.0.0.1:{settings.flower.port}"
    lines = [
        "askq is up; every askq command run in this directory uses this stack:",
        f"  Redis       {redis_url}   (embedded: `askq redis url`)" if not settings.redis_url
        else "  Redis       ASKQ_REDIS_URL",
        f"  simulator   http://127.0.0.1:{sim_port}/v1" if sim_port else "  providers   from ASKQ_PROVIDERS",
        "  worker      1 (`askq workers`)",
        f"  HTTP API    {api}   (docs: {api}/docs; "
        + ("a bearer token from ASKQ_API__TOKENS)" if settings.api.tokens else "no token needed on loopback)"),
        f"  Flower      {flower}   user {user}  password {password}",
        f"  logs        {logs}/*.log",
        'try, in another terminal:  .venv/bin/askq submit "Where is my order?"  then  .venv/bin/askq wait JOB_ID',
        "Ctrl-C stops everything `askq up` started.",
    ]
    for line in lines:
        say(line)


def _watch(stack: Stack) -> int:
    """Wait in the foreground; a child that dies ends the stack, saying which one and where its log is."""
    names = {id(p): f"worker{i}" for i, p in enumerate(stack.workers)}
    names |= {id(p): _service_name(p) for p in stack.services}
    while True:
        for proc in [*stack.workers, *stack.services]:
            code = proc.poll()
            if code is not None:
                name = names.get(id(proc), "a process")
                raise AskqError(f"{name} exited with code {code}; see {stack.var_dir / name}.log")
        time.sleep(0.5)


def _service_name(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args if isinstance(proc.args, list) else []
    return str(args[3]) if len(args) > 3 else "a service"
