"""An environment's mistake is one `askq: error:` line saying what is wrong and what to do, and
`askq health` exits 0/1/2/3 for healthy/warning/critical/unknown (`--probe`: 1 only for the last two).

Every command runs as a real `askq` child process; the health verdicts come from jobs a real
worker ran against the simulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from askq.core.redisserver import EmbeddedRedis, free_port
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import wait_workers

ROOT = Path(__file__).resolve().parent.parent


def askq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "askq", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("askq: error: "), lines[0]
    return lines[0]


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ASKQ_VAR_DIR": str(tmp_path), **values}


@pytest.mark.parametrize("argv", [["submit", "hi"], ["status", "x"], ["wait", "x", "--timeout", "1"],
                                  ["cancel", "x"], ["dlq", "list"], ["stats"], ["workers"], ["health"]])
def test_unreachable_redis_is_one_line_that_says_what_to_do(argv: list[str], tmp_path: Path) -> None:
    done = askq(_env(tmp_path, ASKQ_REDIS_URL=f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"), *argv)
    line = one_error_line(done)
    assert "Connection refused" in line and "ASKQ_REDIS_URL" in line, line
    assert "s3cret" not in line
    # health has no verdict without Redis: unknown (3), never "warning" (1) or "critical" (2).
    assert done.returncode == (3 if argv == ["health"] else 2)


@pytest.mark.parametrize(("url", "problem"), [
    ("http://:s3cret-pw@127.0.0.1:6379/0", "must be a redis://, rediss:// or unix:// URL"),
    ("127.0.0.1:6379", "must be a redis://, rediss:// or unix:// URL"),
    ("redis://:s3cret-pw@127.0.0.1:99999/0", "the port must be a number from 1 to 65535"),
    ("redis://:s3cret-pw@/0", "names no host"),
])
def test_a_wrong_redis_url_is_one_line_naming_the_setting(url: str, problem: str, tmp_path: Path) -> None:
    for argv in (["submit", "hi"], ["health"]):
        done = askq(_env(tmp_path, ASKQ_REDIS_URL=url), *argv)
        line = one_error_line(done)
        assert "redis_url" in line and problem in line, line
        assert "s3cret" not in line
        assert done.returncode == (3 if argv == ["health"] else 2)


def test_a_wrong_redis_password_says_so(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "locked", password="right-password").start()
    try:
        url = server.url.replace("right-password", "wrong-password")
        done = askq(_env(tmp_path, ASKQ_REDIS_URL=url), "stats")
        line = one_error_line(done)
        assert done.returncode == 2
        assert "password" in line and "ASKQ_REDIS_URL" in line and "wrong-password" not in line, line
    finally:
        server.stop()


def test_health_exit_codes_follow_the_verdict_and_probe_fails_only_on_critical_or_unknown(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    env = _env(tmp_path, ASKQ_REDIS_URL=redis_server.url)
    assert (askq(env, "health").returncode, askq(env, "health", "--probe").returncode) == (0, 0)  # no jobs: healthy

    stack.start_worker(concurrency=8)
    wait_workers(r, 1)
    client = Client.from_url(redis_server.url)
    # 1 of 15 dead (every tier refuses it): error rate 6.7 %, answered 93.3 %: a warning.
    ids = client.submit_many([{"question": f"Where is parcel {n}?"} for n in range(14)]
                             + [{"question": "Where is my refund [[sim:bad_request]]"}])
    for job_id in ids:
        client.wait(job_id, timeout=60)
    health = askq(env, "health", "--json")
    assert json.loads(health.stdout)["status"] == "warning" and health.returncode == 1, health.stdout
    assert askq(env, "health", "--probe").returncode == 0  # a container is not unhealthy on a warning

    for job_id in client.submit_many([{"question": f"Refund {n} [[sim:bad_request]]"} for n in range(5)]):
        client.wait(job_id, timeout=60)
    health = askq(env, "health", "--json")
    assert json.loads(health.stdout)["status"] == "critical" and health.returncode == 2, health.stdout
    assert askq(env, "health", "--probe").returncode == 1

    unknown = askq(_env(tmp_path, ASKQ_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"), "health", "--json")
    assert unknown.returncode == 3 and json.loads(unknown.stdout)["status"] == "unknown"
    probe = askq(_env(tmp_path, ASKQ_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"), "health", "--probe")
    assert probe.returncode == 1
    client.close()


def test_a_var_dir_askq_cannot_use_is_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    env = _env(tmp_path)
    env["ASKQ_VAR_DIR"] = str(not_a_dir)
    done = askq(env, "submit", "hi")
    line = one_error_line(done)
    assert done.returncode == 2 and "ASKQ_VAR_DIR" in line and str(not_a_dir) in line, line


@pytest.mark.parametrize(("base_url", "got"), [("ftp://models.example/v1", "got a ftp:// URL"),
                                               ("localhost:8000/v1", "got no scheme"),
                                               ("http:///v1", "got a http:// URL")])
def test_a_provider_url_with_a_wrong_scheme_is_one_line_for_the_worker_and_the_cli(
    base_url: str, got: str, tmp_path: Path
) -> None:
    providers = json.dumps([{"name": "primary", "base_url": base_url, "model": "m"}])
    for argv in (["worker"], ["submit", "hi"]):
        done = askq(_env(tmp_path, ASKQ_PROVIDERS=providers), *argv)
        line = one_error_line(done)
        assert done.returncode == 2
        assert "providers.0.base_url" in line and "must be an http:// or https:// URL" in line and got in line, line
