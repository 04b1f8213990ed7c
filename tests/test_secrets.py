"""API keys never appear in logs, results, dead letters or counters, even when a provider refuses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from askq.config.logging import scrub
from askq.config.settings import load_settings
from askq.core.deadletter import DeadReason
from askq.core.job import JobState
from askq.errors import ConfigError
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_workers

# No well-known shape (no "sk-" prefix): only masking the configured value itself can hide it.
SECRET = "azure9f3c2b7d41e8a6c5SECRET"


def test_rejected_api_key_never_leaks(stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path) -> None:
    sim.configure({"latency_s": 0.01, "require_key": "sk-the-right-key-999999"})
    providers = [
        {"name": "primary", "base_url": sim.url, "model": "primary", "api_key": SECRET, "timeout_s": 2},
        {"name": "secondary", "base_url": sim.url, "model": "secondary", "api_key": SECRET, "timeout_s": 2},
    ]
    proc = stack.start_worker(concurrency=4, ASKQ_PROVIDERS=json.dumps(providers), ASKQ_LOG_LEVEL="debug")
    wait_workers(r, 1)
    settings = load_settings(redis_url=stack.redis_url, var_dir=tmp_path)
    client = Client(settings)
    job_id = client.submit("What is your returns policy?")
    view = client.wait(job_id, timeout=60)

    # 401 is permanent on every tier: the job is dead-lettered, not retried, not answered by default.
    assert view.state is JobState.DEAD
    assert view.reason is DeadReason.PERMANENT_ERROR
    assert sim.stats()["responses"]["primary"] == {"unauthorized": 1}

    stack.kill_worker(proc)
    everything = [json.dumps(r.hgetall(key)) if r.type(key) == "hash" else str(r.dump(key)) for key in r.keys("*")]
    everything.append(client.dead_letter(job_id).model_dump_json())
    everything += [p.read_text(errors="replace") for p in stack.var_dir.glob("*.log")]
    assert any("401" in text or "unauthorized" in text.lower() for text in everything)
    assert not [text for text in everything if SECRET in text]


def test_configured_secrets_are_masked_whatever_their_shape() -> None:
    load_settings(providers=[{"name": "p", "base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key": SECRET}])
    assert SECRET not in scrub(f"provider said: Incorrect API key provided: {SECRET}.")


def test_invalid_settings_error_never_echoes_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(providers=[{"name": "p", "base_url": "http://127.0.0.1:1/v1", "api_key": SECRET}])
    assert "providers.0.model" in str(caught.value)
    assert SECRET not in str(caught.value)
