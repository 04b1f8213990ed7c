"""Each provider fault gives the behaviour in the error table (askq/workers/errorclass.py)."""

from __future__ import annotations

import asyncio
import json
import pickle

import pytest
import redis

from askq.config.settings import Settings
from askq.core import keys
from askq.errors import InternalError, OversizedError, RedirectedError, TransientProviderError
from askq.workers.chain import Chain
from askq.workers.errorclass import classify
from askq.workers.providerhttp import Exchange
from tests.conftest import Sim
from tests.ladderkit import SleepRecorder, job, run_ladder, settings_with

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
    # Hostile providers (defaults: 10 bytes/s, 50 MB, 300 MB inflated, 307).
    "trickle": (3, "transient"),
    "oversize": (1, "oversized"),
    "gzip_bomb": (1, "oversized"),
    "redirect": (1, "redirected"),
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


def test_malformed_body_is_a_transient_provider_error(settings: Settings, sim: Sim) -> None:
    # The SDK raises a bare json.JSONDecodeError for a body cut in half; the chain knows the
    # whole body had come back, so it is the provider's malformed body, not askq's fault.
    chain = Chain(settings.provider("primary"))
    with pytest.raises(TransientProviderError) as caught:
        asyncio.run(chain.ask(job("Hello [[sim:malformed]]")))
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)
    assert str(caught.value).startswith("malformed response:")


@pytest.mark.parametrize("shape", ["empty_object", "lone_surrogate"])
def test_well_formed_json_that_is_not_a_usable_completion_is_the_providers_fault(
        shape: str, settings: Settings, sim: Sim, r: redis.Redis) -> None:
    """`{}` makes LangChain raise a TypeError, the same type as a bug in askq: what tells them
    apart is that the whole body had come back. A lone surrogate in the answer could be stored
    nowhere. Either way the provider is at fault and the secondary answers."""
    malformed = {"kind": "malformed", "malformed_as": shape}
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [malformed]}}})
    [result] = run_ladder(settings_with(settings, sim.url), [job("Where is my order?")])
    assert result.source == "secondary"
    failed = [a for a in result.attempts if a["provider"] == "primary"]
    expected = ["transient"] * 3 if shape == "empty_object" else ["bad_answer"]
    assert [a["error_class"] for a in failed] == expected
    assert r.hgetall(keys.breaker_window("primary"))  # counted against the primary


def test_exceptions_are_the_providers_only_once_something_was_sent() -> None:
    """Unit level: a type askq's own code could raise is askq's before the request left,
    and the provider's once it was sent or its body came back."""
    bug = TypeError("unsupported operand")
    assert isinstance(classify(bug, "p", Exchange()), InternalError)
    assert isinstance(classify(bug, "p", Exchange(sent=True)), TransientProviderError)
    assert isinstance(classify(bug, "p", Exchange(sent=True, received=True)), TransientProviderError)
    assert isinstance(classify(TimeoutError(), "p", Exchange()), TransientProviderError)
    text = str(classify(UnicodeEncodeError("utf-8", "a\udc80", 1, 2, "surrogates not allowed"), "p", Exchange()))
    assert "not the provider's" in text and text.encode("utf-8")  # always encodable
    err = InternalError("boom", "p")
    assert pickle.loads(pickle.dumps(err)).args == ("boom", "p")
    for cls in (OversizedError, RedirectedError):
        assert pickle.loads(pickle.dumps(cls("x", "p", 307))).status == 307


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
