"""A newcomer's path: nothing answers in silence. A worker that can reach no provider says so
when it starts, and `askq submit`, `wait` and `status` say when an answer is the canned default
or when no worker is running. Real `askq` processes, a real worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import redis

from askq.core.redisserver import SERVER_NAMES, EmbeddedRedis, free_port
from askq.stack import Stack
from tests.conftest import wait_for, wait_workers

ROOT = Path(__file__).resolve().parent.parent


def askq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "askq", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_with_no_provider_reachable_the_worker_and_the_cli_say_so(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # The simulator the default settings name is not running: nothing listens on the port.
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    providers = json.dumps([{"name": "primary", "base_url": nowhere, "model": "primary", "timeout_s": 1,
                             "retry": {"max_attempts": 1}}])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ASKQ_VAR_DIR": str(tmp_path),
           "ASKQ_REDIS_URL": redis_server.url, "ASKQ_PROVIDERS": providers}

    alone = askq(env, "submit", "Where is my order?")
    assert alone.returncode == 0 and len(alone.stdout.split()) == 1
    assert "askq: warning: no askq worker is running" in alone.stderr, alone.stderr

    stack.start_worker(concurrency=2, ASKQ_PROVIDERS=providers)
    wait_workers(r, 1)
    log = stack.var_dir / "worker0.log"
    wait_for(lambda: "no_provider_reachable" in log.read_text(), 30, what="the worker's warning")
    assert "askq sim --port 8700" in log.read_text()

    waited = askq(env, "wait", alone.stdout.strip(), "--timeout", "60")
    assert waited.returncode == 0, waited.stderr  # answered, but only by the default tier
    assert json.loads(waited.stdout)["result"]["source"] == "default"
    assert "got the canned default answer (degraded): no provider answered it" in waited.stderr, waited.stderr
    assert "askq sim --port 8700" in waited.stderr
    status = askq(env, "status", alone.stdout.strip())
    assert "got the canned default answer" in status.stderr

    # The next submission already knows: recent jobs were all answered by the default tier.
    again = askq(env, "submit", "Is it in stock?")
    assert "none of the 1 jobs that ended in the last 300 s was answered by a provider" in again.stderr, again.stderr
    assert "no askq worker" not in again.stderr
    many = askq(env, "wait", again.stdout.strip(), alone.stdout.strip(), "--timeout", "60")
    assert "2 of 2 jobs got a degraded answer (default 2)" in many.stderr, many.stderr


def _redis_servers_of(var: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            name = proc.info["name"] or ""
            if any(server in name for server in SERVER_NAMES) and proc.cwd().startswith(str(var)):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_demos_use_the_directorys_redis_which_every_command_finds(tmp_path: Path) -> None:
    """Two demos in one directory share one Redis (never two servers on one AOF), and with
    --keep-running the CLI run in that directory sees the demo's jobs."""
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | {"ASKQ_VAR_DIR": str(var)}
    log = tmp_path / "kept.log"
    with open(log, "w") as out:
        kept = subprocess.Popen([sys.executable, "-m", "askq", "demo", "--jobs", "10", "--workers", "1",
                                 "--keep-running"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        # The first demo starts the directory's Redis; the second finds it.
        wait_for(lambda: "Flower: http" in log.read_text() or kept.poll() is not None, 120,
                 what="the first demo to start")
        other = subprocess.run([sys.executable, "-m", "askq", "demo", "--jobs", "10", "--workers", "1", "--json"],
                               env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert other.returncode == 0, other.stderr[-2000:]
        assert json.loads(other.stdout)["lost"] == 0
        wait_for(lambda: "the stack keeps running" in log.read_text() or kept.poll() is not None, 300,
                 what="the first demo to finish its batch")
        assert kept.poll() is None, log.read_text()[-2000:]
        assert len(_redis_servers_of(var)) == 1

        # The CLI here talks to the demo's Redis: both demos' jobs are in it.
        stats = subprocess.run([sys.executable, "-m", "askq", "stats", "--json"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
        assert json.loads(stats.stdout)["submitted"] == 20, stats.stdout + stats.stderr
        kept.send_signal(signal.SIGINT)
        assert kept.wait(60) == 0, log.read_text()[-2000:]
        # The demo that started the Redis stopped it, nothing else using it by then.
        wait_for(lambda: _redis_servers_of(var) == [], 30, what="the embedded Redis to stop")
    finally:
        if kept.poll() is None:
            kept.kill()
            kept.wait()
        subprocess.run([sys.executable, "-m", "askq", "redis", "stop"], env=env, cwd=tmp_path, timeout=60,
                       capture_output=True)
