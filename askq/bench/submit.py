"""Producer throughput, one producer each: one job per call, pipelined bulk, and the HTTP API in batches.

No worker runs, so the figures are the producer's and Redis's (and the API server's): the
client's `submit` one by one, `submit_many` in chunks, and `askq api` (a real uvicorn process)
taking POST /v1/jobs batches of 100 from one `HttpClient`.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from typing import Any

import httpx

from askq.bench.measure import wait_until
from askq.config.settings import load_settings
from askq.core import keys
from askq.core.connection import connect
from askq.core.redisserver import free_port
from askq.errors import BenchError
from askq.producers.client import Client
from askq.producers.httpclient import HttpClient
from askq.stack import Stack

# The goals, jobs/s: shown beside each figure.
GOALS = {"bulk_jobs_per_s": 20_000, "one_by_one_jobs_per_s": 8_000, "api_batch_jobs_per_s": 5_000}


def _timed(count: int, submit: Any) -> float:
    t0 = time.perf_counter()
    submit()
    return count / (time.perf_counter() - t0)


def _start_api(stack: Stack, token: str) -> str:
    port = free_port()
    stack.start_service("api", ["api"], ASKQ_API__TOKENS=json.dumps([token]), ASKQ_API__PORT=str(port),
                        ASKQ_LOG_LEVEL="warning")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        # Any answer will do: with jobs queued and no worker the verdict itself may be critical (503).
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    if not wait_until(up, 60, 0.2):
        raise BenchError(f"askq api did not answer; see {stack.var_dir}/api.log")
    return url


def measure_submit(stack: Stack, single: int = 4000, bulk: int = 40000, chunk: int = 1000, api_jobs: int = 20000,
                   api_batch: int = 100, durability: str = "relaxed") -> dict[str, Any]:
    """Jobs/s for `single` submit() calls, `bulk` jobs through submit_many(), `api_jobs` through the API."""
    settings = load_settings(redis_url=stack.redis_url, var_dir=stack.var_dir, durability=durability)
    client = Client(settings, connect(settings, stack.redis_url))
    token = secrets.token_hex(16)
    try:
        def one_by_one() -> None:
            for i in range(single):
                client.submit(f"How do I reset my password? (one by one {i})")

        jobs = [{"question": f"Where is my order? (bulk {i})"} for i in range(bulk)]

        def in_bulk() -> None:
            for start in range(0, bulk, chunk):
                client.submit_many(jobs[start : start + chunk])

        out: dict[str, Any] = {"one_by_one_jobs_per_s": round(_timed(single, one_by_one)),
                               "bulk_jobs_per_s": round(_timed(bulk, in_bulk))}
        http = HttpClient(_start_api(stack, token), token=token)
        batches = [[{"question": f"Can I return this? (api {b}-{i})"} for i in range(api_batch)]
                   for b in range(api_jobs // api_batch)]
        http.submit_many(batches.pop())  # the first request opens the connection

        def through_api() -> None:
            for batch in batches:
                http.submit_many(batch)

        out["api_batch_jobs_per_s"] = round(_timed(len(batches) * api_batch, through_api))
        http.close()
        out["queued"] = client.redis.llen(settings.queue)
    finally:
        # Nothing will answer these jobs: leave an empty store behind.
        client.redis.delete(settings.queue, keys.PENDING)
        client.close()
    return out | {"single_jobs": single, "bulk_jobs": bulk, "durability": durability, "bulk_chunk": chunk,
                  "api_jobs": api_jobs, "api_batch": api_batch, "python": sys.version.split()[0]}


def render_submit(out: dict[str, Any]) -> str:
    lines = []
    for key, label in (("one_by_one_jobs_per_s", "client, one by one"), ("bulk_jobs_per_s", "client, bulk"),
                       ("api_batch_jobs_per_s", f"HTTP API, batches of {out['api_batch']}")):
        verdict = "meets" if out[key] >= GOALS[key] else "below"
        lines.append(f"{label}: {out[key]} jobs/s ({verdict} the goal of {GOALS[key]})")
    return "\n".join(lines)
