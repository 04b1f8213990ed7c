"""The producer examples in `producers/` (one per way in) run as printed in the README, against real parts.

Each runs as its own process: the Celery one with an interpreter that can import only `celery`,
the Python one with askq's client, the shell one with curl against a real `askq api`; a real
worker answers all three.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import redis

from askq.core import keys
from askq.core.redisserver import EmbeddedRedis
from askq.stack import Stack
from tests.conftest import Sim, wait_for
from tests.test_api import TOKEN, serve_api

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "producers"


def _answered(r: redis.Redis, job_id: str) -> bool:
    return r.hget(keys.job(job_id), "state") == "succeeded"


def test_each_producer_example_gets_its_job_answered(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, sim: Sim, tmp_path: Path
) -> None:
    stack.start_worker(concurrency=4)
    # Celery only: no site hooks, no askq on the path; celery and its dependencies from site-packages.
    site = sysconfig.get_paths()["purelib"]
    code = (f"import sys; sys.path.append({site!r}); sys.argv = sys.argv[1:]; "
            f"exec(open(sys.argv[0]).read(), {{'__name__': '__main__'}})")
    celery_only = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(EXAMPLES / "celery_only.py"), redis_server.url,
         "Where is my order?", "ticket-4711"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert celery_only.returncode == 0, celery_only.stderr
    (celery_job,) = celery_only.stdout.split()
    wait_for(lambda: _answered(r, celery_job), 60, what="the celery-only job answered")
    assert json.loads(r.hget(keys.job(celery_job), "payload") or "{}")["metadata"] == {"team": "shop"}

    python = subprocess.run([sys.executable, str(EXAMPLES / "python_client.py"), redis_server.url,
                             "Can I pay by card?"], cwd=tmp_path, env=stack.env(), capture_output=True,
                            text=True, timeout=90)
    assert python.returncode == 0, python.stderr
    job_id, state, *answer = python.stdout.split()
    assert state == "succeeded" and answer and _answered(r, job_id)

    url, api = serve_api(stack)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | {"API": url, "TOKEN": TOKEN}
        http = subprocess.run(["sh", str(EXAMPLES / "http.sh"), "Do you ship to Norway?"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=90)
    finally:
        api.terminate()
        api.wait(10)
    assert http.returncode == 0, http.stderr
    created, result = http.stdout.strip().splitlines()
    assert '"created":true' in created.replace(" ", "") and '"answer"' in result, http.stdout


def test_http_example_says_why_the_api_refused_a_question(stack: Stack, tmp_path: Path) -> None:
    # A newcomer's first bad input (an empty question) must show the API's 422 message, not exit silently.
    url, api = serve_api(stack)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | {"API": url, "TOKEN": TOKEN}
        http = subprocess.run(["sh", str(EXAMPLES / "http.sh"), ""], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        wrong_token = subprocess.run(["sh", str(EXAMPLES / "http.sh"), "Hello?"], cwd=tmp_path,
                                     env=env | {"TOKEN": "not-the-token"}, capture_output=True, text=True,
                                     timeout=60)
    finally:
        api.terminate()
        api.wait(10)
    assert http.returncode != 0
    assert "question" in http.stderr and "422" in http.stderr, (http.stdout, http.stderr)
    assert wrong_token.returncode != 0 and "401" in wrong_token.stderr, (wrong_token.stdout, wrong_token.stderr)


def test_python_example_says_when_no_answer_came_in_time(redis_server: EmbeddedRedis, stack: Stack,
                                                         tmp_path: Path) -> None:
    # No worker runs: the wait runs out. A newcomer gets one line saying so (and the job id), not a traceback.
    python = subprocess.run([sys.executable, str(EXAMPLES / "python_client.py"), redis_server.url,
                             "Anyone there?", "--timeout", "1"], cwd=tmp_path, env=stack.env(),
                            capture_output=True, text=True, timeout=60)
    assert python.returncode == 1, (python.stdout, python.stderr)
    (job_id,) = python.stdout.split()
    assert "Traceback" not in python.stderr and job_id in python.stderr and "1" in python.stderr, python.stderr
