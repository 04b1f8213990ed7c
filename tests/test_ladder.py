"""The fallback ladder in one process: Retry-After, budgets, cache and default tiers, logs."""

from __future__ import annotations

import redis
from structlog.testing import capture_logs

from askq.config.settings import Settings
from askq.core.job import JobSpec
from askq.workers.cache import cache_key
from tests.conftest import Sim
from tests.ladderkit import SleepRecorder, job, run_ladder, settings_with

ALL_DOWN = {"latency_s": 0.02, "faults": [{"kind": "server_error"}]}


def _primary_rate_limited(sim: Sim, retry_after_s: float) -> None:
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [
        {"kind": "rate_limit", "retry_after_s": retry_after_s}]}}})


def test_retry_after_is_honoured(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    _primary_rate_limited(sim, 1.5)
    sleep = SleepRecorder()
    [result] = run_ladder(settings_with(settings, sim.url), [job("Where is my order?")], sleep)
    primary = [a for a in result.attempts if a["provider"] == "primary"]
    assert len(primary) == 3 and sim.requests("primary") == 3  # max_attempts
    assert [a["retry_after_s"] for a in primary] == [1.5, 1.5, 1.5]
    # Two retries, each waiting at least what the provider asked for.
    assert len(sleep.waits) == 2 and all(w >= 1.5 for w in sleep.waits)
    assert all(a["wait_s"] >= 1.5 for a in primary[:2])
    assert result.source == "secondary"


def test_retry_after_beyond_budget_moves_on_without_sleeping(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    _primary_rate_limited(sim, 30)  # the default budget is 5 s
    sleep = SleepRecorder()
    [result] = run_ladder(settings_with(settings, sim.url), [job("Where is my order?")], sleep)
    assert sim.requests("primary") == 1
    assert sleep.waits == []
    assert result.attempts[0]["moved_on"] == "retry_after_over_budget"
    assert result.source == "secondary" and result.degraded is False


def test_all_providers_down_gives_the_cached_answer_degraded(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    s = settings_with(settings, sim.url, cache_fast_path=False)
    question = "How long does shipping take?"
    [first] = run_ladder(s, [job(question)])
    assert first.source == "primary" and first.answer is not None
    sim.configure(ALL_DOWN)
    [second] = run_ladder(s, [job("  how LONG does   shipping take? ")])
    assert second.outcome == "answered"
    assert (second.source, second.degraded) == ("cache", True)
    assert second.answer is not None and second.answer.text == first.answer.text
    assert second.cache_hits == 1


def test_all_providers_down_without_cache_gives_the_default_answer(settings: Settings, sim: Sim,
                                                                   r: redis.Redis) -> None:
    sim.configure(ALL_DOWN)
    s = settings_with(settings, sim.url, default_answer="Sorry, later.")
    [result] = run_ladder(s, [job("Is my card charged twice?")])
    assert (result.outcome, result.source, result.degraded) == ("answered", "default", True)
    assert result.answer is not None and result.answer.text == "Sorry, later."
    assert sim.requests("primary") == 3 and sim.requests("secondary") == 2


def test_on_exhausted_retry_hands_back_exhausted(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    sim.configure(ALL_DOWN)
    [result] = run_ladder(settings_with(settings, sim.url, on_exhausted="retry"), [job("Where is my refund?")])
    assert result.outcome == "exhausted" and result.answer is None
    assert "secondary" in result.last_error


def test_cache_fast_path_answers_the_same_question_without_a_call(settings: Settings, sim: Sim,
                                                                   r: redis.Redis) -> None:
    s = settings_with(settings, sim.url)
    first, second = run_ladder(s, [job("Do you ship to Norway?"), job("do you  SHIP to Norway?\n")])
    assert first.source == "primary"
    assert (second.source, second.degraded) == ("cache", False)
    assert second.cache_hits == 1
    assert sim.requests("primary") == 1


def test_fast_path_serves_only_first_tier_answers(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    """A fallback tier's answer is no stand-in for a fresh one: asked again, the primary is tried."""
    s = settings_with(settings, sim.url)
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": "server_error"}]}}})
    [first] = run_ladder(s, [job("Can I change my delivery slot?")])
    assert (first.source, first.degraded) == ("secondary", False)
    sim.configure({"latency_s": 0.02})
    [second] = run_ladder(s, [job("Can I change my delivery slot?")])
    assert (second.source, second.degraded) == ("primary", False)
    assert sim.requests("primary") == 1


def test_cache_key_normalisation() -> None:
    def key(question: str, context: list[str] | None = None, version: str = "v1") -> str:
        return cache_key(JobSpec.new(question, context=context), version)

    assert key("Where is my order?") == key("  where IS my\torder? ") == key("\uff37here is my order?")
    assert key("Where is my order?") != key("Where is my order")
    assert key("q", ["Doc  one"]) == key("q", ["Doc one "])
    assert key("q", ["Doc one"]) != key("q", ["doc one"])
    assert key("q", ["a", "b"]) != key("q", ["b", "a"])
    assert key("q") != key("q", version="v2")


def test_every_attempt_is_logged_with_provider_outcome_class_and_wait(settings: Settings, sim: Sim,
                                                                       r: redis.Redis) -> None:
    _primary_rate_limited(sim, 0.5)
    with capture_logs() as logs:
        [result] = run_ladder(settings_with(settings, sim.url), [job("Where is my parcel?")])
    attempts = [e for e in logs if e["event"] == "attempt"]
    assert len(attempts) == len(result.attempts) == 4  # 3 on the primary, 1 on the secondary
    for event in attempts:
        assert {"provider", "outcome", "error_class", "wait_s"} <= set(event)
    assert [(e["provider"], e["outcome"], e["error_class"]) for e in attempts] == [
        ("primary", "failed", "rate_limited")] * 3 + [("secondary", "ok", "")]
    assert attempts[0]["wait_s"] >= 0.5 and attempts[2]["moved_on"] == "attempts_exhausted"


def test_counters_record_attempts_retries_fallbacks(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    sim.configure(ALL_DOWN)
    [result] = run_ladder(settings_with(settings, sim.url), [job("Can I change my address?")])
    calls = result.calls
    assert (calls["primary"].attempts, calls["secondary"].attempts) == (3, 2)
    assert (calls["primary"].retries, calls["secondary"].retries) == (2, 1)
    assert result.fallbacks == 3  # secondary, cache, default
