"""Each provider fault gives the behaviour in the error table (workers/errorclass.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from config.settings import Settings
from core import keys
from tests.conftest import Sim
from tests.ladderkit import SleepRecorder, job, run_ladder, settings_with
from workers.chain import Chain
from workers.errorclass import classify

# kind -> (requests the primary sees, error class recorded). The secondary answers every time.
TABLE = {
    "rate_limit": (3, "rate_limited"),
    "server_error": (3, "transient"),
    "timeout": (3, "transient"),
    "hang": (3, "transient"),
    "reset": (3, "transient"),
    "malformed": (3, "transient"),
    "truncated": (1, "bad_answer"),
    "empty": (1, "bad_answer"),
    "bad_request": (1, "permanent"),
    "auth": (1, "permanent"),
    "forbidden": (1, "permanent"),
    "not_found": (1, "permanent"),
    "content_policy": (1, "permanent"),
    "context_length": (1, "context_too_long"),
}


@pytest.mark.parametrize("kind", sorted(TABLE))
def test_fault_on_primary_is_handled_as_the_table_says(kind: str, settings: Settings, sim: Sim,
                                                       r: redis.Redis) -> None:
    providers = [
        {"name": "primary", "base_url": sim.url, "model": "primary", "timeout_s": 0.5,
         "retry": {"max_attempts": 3, "budget_s": 5.0}},
        {"name": "secondary", "base_url": sim.url, "model": "secondary", "timeout_s": 2.0, "prompt": "short"},
    ]
    s = settings_with(settings, sim.url, providers)
    sleep = SleepRecorder()
    [result] = run_ladder(s, [job(f"Where is my order? [[sim:{kind}@primary]]")], sleep)
    expected_requests, error_class = TABLE[kind]
    assert result.outcome == "answered"
    assert result.source == "secondary" and result.degraded is False
    assert sim.requests("primary") == expected_requests
    assert sim.requests("secondary") == 1
    failed = [a for a in result.attempts if a["provider"] == "primary"]
    assert [a["error_class"] for a in failed] == [error_class] * expected_requests
    # Retries happen exactly when the table says so, and each one waited first.
    assert len(sleep.waits) == expected_requests - 1
    if kind == "rate_limit":  # the simulator sends Retry-After: 1
        assert all(w >= 1.0 for w in sleep.waits)
    assert result.counters["fallbacks"] == 1


def test_malformed_body_raises_bare_json_error_classified_transient(settings: Settings, sim: Sim) -> None:
    chain = Chain(settings.provider("primary"))
    with pytest.raises(json.JSONDecodeError) as caught:
        asyncio.run(chain.ask(job("Hello [[sim:malformed]]")))
    assert classify(caught.value, "primary").error_class == "transient"


def test_permanent_error_on_every_tier_is_not_retried_and_dead_letters(settings: Settings, sim: Sim,
                                                                        r: redis.Redis) -> None:
    s = settings_with(settings, sim.url)
    sleep = SleepRecorder()
    [result] = run_ladder(s, [job("Tell me something [[sim:content_policy]]")], sleep)
    assert result.outcome == "permanent"
    assert sim.requests("primary") == 1 and sim.requests("secondary") == 1
    assert sleep.waits == []
    # A refused request says nothing bad about the provider: its breaker counted a success.
    assert r.hget(keys.breaker("primary"), "state") in (None, "closed")


def test_context_too_long_skips_to_a_tier_that_accepts_it(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    sim.configure({"latency_s": 0.02, "models": {"primary": {"max_context_chars": 2000}}})
    s = settings_with(settings, sim.url)
    docs = ["Our returns policy: " + "items may be returned within 30 days. " * 80]
    [result] = run_ladder(s, [job("Can I return this?", context=docs)])
    assert result.source == "secondary"  # the short prompt leaves the documents out
    assert sim.requests("primary") == 1
    assert result.attempts[0]["error_class"] == "context_too_long"


def test_known_context_limit_skips_the_tier_without_a_request(settings: Settings, sim: Sim,
                                                               r: redis.Redis) -> None:
    providers = [
        {"name": "primary", "base_url": sim.url, "model": "primary", "max_context_chars": 500},
        {"name": "secondary", "base_url": sim.url, "model": "secondary", "prompt": "short"},
    ]
    s = settings_with(settings, sim.url, providers)
    [result] = run_ladder(s, [job("Can I return this?", context=["x " * 600])])
    assert result.source == "secondary"
    assert sim.requests("primary") == 0
