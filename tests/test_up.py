"""`askq up`: the whole local stack in the foreground, found by every other askq command run in
the same directory, stopped (all of it, and only it) by Ctrl-C. Real processes throughout."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from askq.core.redisserver import free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def askq(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "askq", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_up_runs_the_stack_other_commands_find_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    api_port, flower_port, sim_port = free_port(), free_port(), free_port()
    # A newcomer's directory: no ASKQ_REDIS_URL, no .env; only the ports are moved off the defaults.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ASKQ_VAR_DIR": str(tmp_path / "var"),
           "ASKQ_API__PORT": str(api_port), "ASKQ_FLOWER__PORT": str(flower_port)}
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "askq", "up", "--sim-port", str(sim_port)],
                              env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in log.read_text() or up.poll() is not None, 120,
                 what="askq up to print its URLs")
        text = log.read_text()
        assert up.poll() is None, text
        assert f"http://127.0.0.1:{api_port}" in text and f"http://127.0.0.1:{sim_port}/v1" in text
        (password,) = re.findall(rf"http://127.0.0.1:{flower_port}\s+user askq\s+password (\S+)", text)
        assert httpx.get(f"http://127.0.0.1:{flower_port}/api/workers", auth=("askq", password)).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200

        # Another command in the same directory uses this stack: its Redis, its worker, its simulator.
        submitted = askq(env, tmp_path, "submit", "Where is my order?")
        assert submitted.returncode == 0, submitted.stderr
        waited = askq(env, tmp_path, "wait", submitted.stdout.strip(), "--timeout", "60")
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["result"]["source"] == "primary"
        assert "warning" not in submitted.stderr + waited.stderr

        # A second `askq up` here says what is in the way instead of starting a second stack.
        second = askq(env, tmp_path, "up", "--sim-port", str(sim_port))
        assert second.returncode == 2
        assert second.stderr.startswith(f"askq: error: port {api_port} for the HTTP API is in use"), second.stderr

        redis_pid = json.loads((tmp_path / "var" / "redis.json").read_text())["pid"]
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 4  # simulator, worker, API, Flower
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    _, alive = psutil.wait_procs(children, timeout=20)
    assert alive == [], f"still running after Ctrl-C: {[p.cmdline() for p in alive]}"
    assert not any(_listening(port) for port in (api_port, flower_port, sim_port))
    # It started the embedded Redis, so it stopped it too.
    assert not psutil.pid_exists(redis_pid) or psutil.Process(redis_pid).status() == psutil.STATUS_ZOMBIE
