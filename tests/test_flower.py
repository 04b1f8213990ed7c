"""Flower, run as operators run it (`askq flower`), against real workers: what it shows agrees
with askq's own records (issue 13.1, Reliability promise 12).

With ASKQ_TEST_SCREENSHOTS=1 the tasks page is also rendered by Debian's headless Chromium
into docs/flower.png (skipped, saying so, where /usr/bin/chromium is missing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from askq.config.settings import Settings
from askq.core.job import JobState
from askq.core.redisserver import free_port
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import SCREENSHOTS, Sim, wait_for

ROOT = Path(__file__).resolve().parent.parent
AUTH = ("operator", "flower-test-password")
# The Prometheus exposition askq's API serves at /metrics, printed by a process of the stack.
_PRINT_METRICS = """
from prometheus_client import generate_latest
from askq.config.settings import load_settings
from askq.core.connection import connect
from askq.core.metrics import registry_for
s = load_settings()
print(generate_latest(registry_for(connect(s), s)).decode())
"""


def _api(url: str, path: str) -> Any:
    response = httpx.get(f"{url}{path}", auth=AUTH, timeout=10)
    response.raise_for_status()
    return response.json()


def _page(url: str, path: str) -> str:
    response = httpx.get(f"{url}{path}", auth=AUTH, timeout=10)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    return response.text


def _task_of(tasks: dict[str, Any], job_id: str, state: str) -> dict[str, Any] | None:
    """Flower's record of a task of this job (its task ids start with the job id) in this state."""
    return next((t for tid, t in tasks.items() if tid.startswith(job_id + ".") and t.get("state") == state), None)


@pytest.mark.timeout(150)
def test_flower_shows_queues_failures_retries_and_askqs_worker_names(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    env = {"ASKQ_ON_EXHAUSTED": "retry", "ASKQ_DURABLE_RETRY_BASE_S": "30", "ASKQ_DURABLE_RETRY_CAP_S": "60"}
    stack.start_worker(concurrency=4, name="flowerw", **env)
    # And one that keeps Celery's default node name (askq worker without --name).
    stack.start_service("worker-default", ["worker", "--concurrency", "4"], **env)
    port = free_port()
    stack.start_service("flower", ["flower", "--port", str(port), "--address", "127.0.0.1"],
                        ASKQ_FLOWER__USER=AUTH[0], ASKQ_FLOWER__PASSWORD=AUTH[1])
    url = f"http://127.0.0.1:{port}"

    def askq_names() -> set[str]:
        out = subprocess.run([sys.executable, "-m", "askq", "workers", "--json"], env=stack.env(),
                             capture_output=True, text=True, timeout=30)
        return {w["name"] for w in json.loads(out.stdout or "[]")}

    names = wait_for(lambda: len(n := askq_names()) == 2 and n, 60, 0.5, what="two askq workers")
    assert any(n.startswith("flowerw@") for n in names), names
    assert any(re.fullmatch(r"celery-\d+@.+", n) for n in names), names  # the default made unique

    def flower_workers() -> set[str] | None:
        try:
            return set(_api(url, "/api/workers?refresh=1")) or None
        except httpx.HTTPError:
            return None

    # One name per process: Flower's, `askq workers`' and the metrics' (labelled from heartbeats).
    assert wait_for(lambda: (w := flower_workers()) == names and w, 60, 1.0, what="Flower's workers") == names
    metrics = subprocess.run([sys.executable, "-c", _PRINT_METRICS], env=stack.env(), capture_output=True, text=True,
                             timeout=30)
    labelled = set(re.findall(r'askq_worker_heartbeat_age_seconds\{worker="([^"]+)"\}', metrics.stdout))
    assert labelled == names, metrics.stdout + metrics.stderr

    # Task events flow once Flower has enabled them: a job answered shows SUCCESS.
    client = Client(settings)
    asked = iter(range(100))

    def a_success() -> dict[str, Any] | None:
        # Submitted until one lands after Flower enabled the workers' task events.
        job_id = client.submit(f"Where is parcel {next(asked)}?")
        assert client.wait(job_id, timeout=30).state is JobState.SUCCEEDED
        return wait_for(lambda: _task_of(_api(url, "/api/tasks"), job_id, "SUCCESS"), 5, 0.5, what="SUCCESS")

    ok = wait_for(_maybe(a_success), 60, 0.5, what="a task-succeeded in Flower")
    assert ok["worker"] in names

    # Every tier refuses it (401): dead-lettered permanent_error, a FAILURE in Flower.
    dead = client.submit("Who am I? [[sim:auth]]")
    assert client.wait(dead, timeout=30).state is JobState.DEAD
    failed = wait_for(lambda: _task_of(_api(url, "/api/tasks"), dead, "FAILURE"), 30, 0.5, what="FAILURE")
    assert "JobDeadError" in failed["exception"] and "permanent_error" in failed["exception"], failed
    assert "401" in failed["exception"] and "sk-askq-simulator" not in failed["exception"], failed  # key masked
    assert failed["worker"] in names
    # Every tier fails transiently: a durable retry (askq's, in 30-60 s), a RETRY in Flower.
    deferred = client.submit("Anyone there? [[sim:server_error]]")
    wait_for(lambda: client.get(deferred).state is JobState.RETRYING, 40, 0.2, what="the job retrying")
    retried = wait_for(lambda: _task_of(_api(url, "/api/tasks"), deferred, "RETRY"), 30, 0.5, what="RETRY")
    assert "durable retry" in retried["exception"], retried
    # Raising changed what Flower sees only: nothing was requeued or left unacked by it.
    wait_for(lambda: r.llen(settings.queue) == 0, 20, what="an empty queue")
    assert client.get(dead).state is JobState.DEAD and client.get(deferred).state is JobState.RETRYING
    assert _api(url, "/api/queues/length") == {"active_queues": [{"name": settings.queue, "messages": 0}]}

    # The rendered pages: the broker page lists the queue (it said "'redis' broker is not supported").
    broker = _page(url, "/broker")
    assert "not supported" not in broker and settings.queue in broker and "redis://" in broker
    task_page = _page(url, f"/task/{failed['uuid']}")
    assert "FAILURE" in task_page and "permanent_error" in task_page
    workers_page = _page(url, "/workers")
    assert all(n in workers_page for n in names)
    _page(url, "/tasks")
    client.close()

    if SCREENSHOTS:
        _screenshot(f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{port}/tasks", ROOT / "docs" / "flower.png")


def _maybe(probe: Any) -> Any:
    """A wait_for probe that treats an assertion or HTTP failure of one try as `not yet`."""
    def attempt() -> Any:
        try:
            return probe()
        except (AssertionError, httpx.HTTPError, TimeoutError):
            return None
    return attempt


def _screenshot(url: str, out: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("ASKQ_TEST_SCREENSHOTS=1 but chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                        "--window-size=1280,800", "--virtual-time-budget=5000", f"--screenshot={shot}", url],
                       capture_output=True, timeout=60, check=True)
        assert shot.stat().st_size > 10_000
        shutil.copyfile(shot, out)
