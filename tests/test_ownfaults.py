"""askq's own faults, and a job's own bad data, are never counted against a provider.

A job whose text cannot be encoded into a request fails before anything reaches the provider:
it must not be retried, must not move any breaker, and must be dead-lettered `internal_error`
(not answered with the default). The job is written straight to Redis and run by a real
Runtime in this process, as a worker runs it: submission may refuse such text, and a worker's
message parsing may too, but neither is what is tested here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from structlog.testing import capture_logs

from askq.config.settings import Settings
from askq.core import keys, message, scripts
from askq.core.deadletter import DeadLetter, DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import JobSpec, payload_text
from askq.sim.answers import answer_for
from askq.workers.execution import execute
from askq.workers.runtime import Runtime
from tests.conftest import Sim, wait_for
from tests.ladderkit import job, run_ladder, settings_with

LONE_SURROGATE = "\udc80"


def _unencodable(n: int) -> JobSpec:
    """A job whose context holds a lone surrogate: valid Python text, not encodable as UTF-8."""
    return JobSpec.model_construct(
        id=f"badtext{n}", question=f"What does this document say? ({n})",
        context=[f"Scanned page{LONE_SURROGATE} {n}"], idempotency_key=None, metadata={}, created=time.time())


def _write_job(r: redis.Redis, settings: Settings, spec: JobSpec) -> None:
    """Create the job and its message exactly as SUBMIT does, with no check of the text."""
    payload = spec.model_dump(mode="json")
    created = scripts.register(r, "submit")(
        keys=[keys.job(spec.id), keys.PENDING, settings.queue, keys.STATS],
        args=[payload_text(payload), message.build(settings.queue, payload, dispatch=1), time.time(), spec.id,
              settings.queue])
    assert created == 1


@pytest.fixture
def runtime(settings: Settings, sim: Sim, r: redis.Redis) -> Iterator[Runtime]:
    # Both tiers send the context documents, so the job cannot be sent to either of them.
    providers = [{"name": name, "base_url": sim.url, "model": name, "timeout_s": 10.0}
                 for name in ("primary", "secondary")]
    rt = Runtime(settings_with(settings, sim.url, providers))
    yield rt
    rt.close()


def _breaker_untouched(r: redis.Redis) -> None:
    for provider in ("primary", "secondary"):
        assert r.hget(keys.breaker(provider), "state") in (None, "closed")
        assert r.hgetall(keys.breaker_window(provider)) == {}


@pytest.mark.timeout(30)
def test_job_whose_text_cannot_be_encoded_is_dead_lettered_internal_error(runtime: Runtime, r: redis.Redis,
                                                                          settings: Settings, sim: Sim) -> None:
    spec = _unencodable(1)
    _write_job(r, settings, spec)
    with capture_logs() as logs:
        outcome = runtime.call(execute(runtime, spec, 1, "task-1"), timeout=20)
    assert outcome == "dead:ok"
    fields = r.hgetall(keys.job(spec.id))
    assert (fields["state"], fields["reason"]) == ("dead", DeadReason.INTERNAL_ERROR.value)
    assert "UnicodeEncodeError" in fields["error"] and "not the provider" in fields["error"]
    [record] = DeadLetterQueue(r, settings).list()
    assert record.reason is DeadReason.INTERNAL_ERROR
    # A record is shown by the API, the CLI and pages, so it holds only text that encodes: the
    # payload is kept in its raw text with the bad character escaped, for inspection.
    assert record.payload is None and record.raw is not None
    escaped = json.dumps(LONE_SURROGATE)[1:-1]
    assert f"Scanned page{escaped} 1" in record.raw and "record kept as text" in record.error
    assert DeadLetter.model_validate_json(record.model_dump_json()) == record
    # Never sent, never retried, never counted: no request reached either tier.
    assert sim.requests("primary") == 0 and sim.requests("secondary") == 0
    _breaker_untouched(r)
    stats = r.hgetall(keys.STATS)
    assert not any(k.startswith(("errors:", "retries:")) for k in stats), stats
    assert stats.get("default_answers") is None
    [event] = [e for e in logs if e["event"] == "internal_error"]
    assert event["provider"] == "primary" and event["log_level"] == "error" and event["exc_info"]


@pytest.mark.timeout(60)
def test_ten_unencodable_jobs_do_not_open_the_breaker(runtime: Runtime, r: redis.Redis, settings: Settings,
                                                      sim: Sim) -> None:
    specs = [_unencodable(n) for n in range(10)]
    for spec in specs:
        _write_job(r, settings, spec)

    async def run_all() -> list[str]:
        import asyncio

        return list(await asyncio.gather(*(execute(runtime, s, 1, f"task-{s.id}") for s in specs)))

    with capture_logs() as logs:  # held, not rendered: a traceback per job is what a worker logs
        assert runtime.call(run_all(), timeout=40) == ["dead:ok"] * 10
    assert sum(e["event"] == "internal_error" for e in logs) == 10
    _breaker_untouched(r)
    assert sim.requests("primary") == 0 and sim.requests("secondary") == 0
    reasons = {r.hget(keys.job(s.id), "reason") for s in specs}
    assert reasons == {DeadReason.INTERNAL_ERROR.value}
    # The primary is as healthy as before: the next ordinary job is answered by it.
    normal = job("Is my order on its way?")
    _write_job(r, settings, normal)
    assert runtime.call(execute(runtime, normal, 1, "task-normal"), timeout=20) == "ok"
    view = r.hgetall(keys.job(normal.id))
    assert view["state"] == "succeeded" and answer_for(normal.question, "primary") in view["result"]


@pytest.mark.timeout(30)
def test_unencodable_job_holding_the_half_open_probe_hands_it_back(settings: Settings, sim: Sim,
                                                                   r: redis.Redis) -> None:
    """The one probe of a half-open breaker must judge the provider: a job that fails before
    sending anything hands it on, so the next job probes and closes the breaker."""
    s = settings_with(settings, sim.url, breaker={"min_requests": 2, "cooldown_s": 0.5})
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": "server_error"}]}}})
    run_ladder(s, [job("Where is my order?")])
    assert r.hget(keys.breaker("primary"), "state") == "open"
    sim.configure({"latency_s": 0.02})
    wait_for(lambda: time.time() - float(r.hget(keys.breaker("primary"), "opened_at") or 0) > 0.6, 10,
             what="the cooldown to pass")
    [bad] = run_ladder(s, [_unencodable(1)])
    assert bad.outcome == "internal" and sim.requests("primary") == 0
    assert r.hget(keys.breaker("primary"), "state") == "half_open"
    [good] = run_ladder(s, [job("Is my parcel insured?")])
    assert good.source == "primary"
    assert r.hget(keys.breaker("primary"), "state") == "closed"
