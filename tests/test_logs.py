"""With ASKQ_LOG_JSON=true every askq process writes one JSON object per line: the worker (and
Celery's own loggers, the reaper), the API (and uvicorn's access and error logs), Flower.

Real processes through `askq worker`, `askq api` and `askq flower`; every line of their output
(stdout and stderr together) must parse as a JSON object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import redis

from askq.core.redisserver import free_port
from askq.producers.client import Client
from askq.stack import Stack, default_providers
from tests.conftest import Sim, wait_for, wait_workers

PROVIDER_KEY = "sk-logs-test-provider-key-0123456789"
TOKEN = "logs-test-api-token"
FLOWER_PASSWORD = "logs-test-flower-password"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log as a JSON object; fails naming the first line that is not one."""
    events = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name} line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(event, dict), f"{path.name} line {number} is not a JSON object: {line[:300]!r}"
        events.append(event)
    return events


def test_every_process_logs_one_json_object_per_line(stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path) -> None:
    providers = [p | {"api_key": PROVIDER_KEY} for p in default_providers(sim.url, timeout_s=2.0)]
    env = {"ASKQ_LOG_JSON": "true", "ASKQ_PROVIDERS": json.dumps(providers), "ASKQ_API__TOKENS": json.dumps([TOKEN]),
           "ASKQ_FLOWER__USER": "admin", "ASKQ_FLOWER__PASSWORD": FLOWER_PASSWORD}
    # Celery at info: its own loggers' lines (connecting, ready) must be JSON too.
    stack.workers.append(stack.spawn("worker0", [sys.executable, "-m", "askq", "worker", "--concurrency", "4",
                                                 "--name", "logs", "--loglevel", "info"], stack.env(**env)))
    api_port, flower_port = free_port(), free_port()
    stack.start_service("api", ["api", "--port", str(api_port)], **env)
    stack.start_service("flower", ["flower", "--port", str(flower_port)], **env)
    wait_workers(r, 1)
    api, flower = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{flower_port}"
    http = httpx.Client(timeout=10)
    wait_for(lambda: _answers(http, f"{api}/healthz"), 60, what="the API")
    wait_for(lambda: _answers(http, f"{flower}/healthcheck"), 60, what="Flower")

    assert stack.redis_url
    client = Client.from_url(stack.redis_url)
    # The primary refuses the key, echoing it (as providers do); the secondary answers.
    job_id = client.submit("Where is my order [[sim:auth@primary]]?")
    assert client.wait(job_id, timeout=60).state == "succeeded"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert http.get(f"{api}/v1/jobs/{job_id}", headers=headers).status_code == 200
    assert http.get(f"{api}/v1/jobs/nope", headers=headers).status_code in (404, 422)
    assert http.get(f"{flower}/api/workers", auth=("admin", FLOWER_PASSWORD)).status_code == 200
    assert http.get(f"{flower}/api/workers").status_code == 401
    http.close()
    stack.stop()  # shutdown lines too

    logs = {name: stack.var_dir / f"{name}.log" for name in ("worker0", "api", "flower")}
    events = {name: json_lines(path) for name, path in logs.items()}
    for name, path in logs.items():
        text = path.read_text()
        for secret in (PROVIDER_KEY, TOKEN, FLOWER_PASSWORD):
            assert secret not in text, f"{secret} in {name}'s log"

    worker = events["worker0"]
    attempts = [e for e in worker if e.get("event") == "attempt" and e.get("job_id") == job_id]
    failed = [e for e in attempts if e["outcome"] == "failed"]
    assert failed and failed[0]["provider"] == "primary" and failed[0]["status"] == 401
    # What went wrong, with the key the provider echoed masked.
    assert "Incorrect API key provided" in failed[0]["error"] and "***" in failed[0]["error"]
    assert any(e["outcome"] == "ok" and e["provider"] == "secondary" for e in attempts)
    assert any(e.get("event") == "worker_started" for e in worker)
    # Celery's own loggers (the consumer connecting, the worker ready) come through as events too.
    assert any(e.get("logger", "").startswith("celery") for e in worker), "no Celery line in the worker log"

    api_events = events["api"]
    access = [e for e in api_events if e.get("logger") == "uvicorn.access"]
    assert any(f"/v1/jobs/{job_id}" in json.dumps(e) for e in access), "no uvicorn access line for the request"
    assert any(e.get("logger") == "uvicorn.error" for e in api_events), "no uvicorn startup line"

    flower_events = events["flower"]
    assert any(e.get("logger", "").startswith("flower") for e in flower_events), "no line of Flower's own"


def _answers(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(url).status_code < 500
    except httpx.HTTPError:
        return False
