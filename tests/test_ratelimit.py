"""Shared rate limits: two worker processes together stay within a provider's requests per minute."""

from __future__ import annotations

import json

import redis

from askq.config.settings import Settings
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_workers


def test_two_workers_stay_within_requests_per_minute(stack: Stack, r: redis.Redis, sim: Sim,
                                                     settings: Settings) -> None:
    providers = [
        {"name": "primary", "base_url": sim.url, "model": "primary", "requests_per_minute": 30},
        {"name": "secondary", "base_url": sim.url, "model": "secondary", "prompt": "short"},
    ]
    env = {"ASKQ_PROVIDERS": json.dumps(providers), "ASKQ_RATE_LIMIT_WAIT_S": "0.2"}
    stack.start_worker(concurrency=10, **env)
    stack.start_worker(concurrency=10, **env)
    wait_workers(r, 2)
    client = Client(settings)
    ids = client.submit_many([{"question": f"Rate limited question {i}?"} for i in range(60)])
    views = [client.wait(job_id, timeout=60) for job_id in ids]
    assert all(v.state == "succeeded" for v in views)
    arrivals = sorted(sim.stats()["arrivals"].get("primary", []))
    # No 60 s window at the provider holds more than 30 requests.
    assert all(sum(1 for t in arrivals if start <= t < start + 60) <= 30 for start in arrivals)
    assert 1 <= len(arrivals) <= 30
    by_source = [v.result.source for v in views if v.result is not None]
    assert by_source.count("primary") == len(arrivals)
    assert by_source.count("secondary") == 60 - len(arrivals)
