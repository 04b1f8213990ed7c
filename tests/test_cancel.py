"""Cancellation and expiry: a cancelled or expired job never calls a provider and never gets a result.

Real Redis, real worker processes, the simulator over HTTP (its request counts and in-flight
gauge show whether a provider was called and whether a call was cut short).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aredis
from fastapi.testclient import TestClient

from askq.config.settings import ApiSettings, Settings
from askq.core import keys, scripts
from askq.core.deadletter import DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.health import check_health
from askq.core.job import CancelOutcome, JobState, Result, parse_spec
from askq.core.stats import read_counters, read_health_window
from askq.core.store import cancel_keys
from askq.errors import InvalidJobError, JobNotFoundError
from askq.producers.api import create_app
from askq.producers.client import Client
from askq.producers.httpclient import HttpClient
from askq.stack import Stack
from askq.workers.execution import execute
from askq.workers.jobstate import JobState as WorkerJobState
from askq.workers.reaper import Reaper
from askq.workers.runtime import Runtime
from tests.conftest import Sim, wait_for, wait_workers
from tests.test_api import TOKEN as TEST_API_TOKEN
from tests.test_api import serve_api
from tests.test_cli import run_main

TOKEN = "cancel-token"


@pytest.fixture
def client(settings: Settings, r: redis.Redis) -> Iterator[Client]:
    c = Client(settings)
    yield c
    c.close()


def test_a_cancelled_queued_job_never_calls_a_provider(
    stack: Stack, r: redis.Redis, client: Client, sim: Sim
) -> None:
    cancelled = client.submit("Where is my order?")
    assert client.cancel(cancelled) is CancelOutcome.CANCELLED
    # Idempotent: a second cancel changes nothing and says so.
    assert client.cancel(cancelled) is CancelOutcome.ALREADY_CANCELLED
    view = client.get(cancelled)
    assert view.state is JobState.CANCELLED and view.result is None
    assert client.wait(cancelled, timeout=1).state is JobState.CANCELLED  # waiters return for it
    assert r.zscore(keys.PENDING, cancelled) is None
    # Its message is still on the queue: a worker started now takes it first, and refuses it.
    other = client.submit("Do you ship abroad?")
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    assert client.wait(other, timeout=60).state is JobState.SUCCEEDED
    assert r.llen(client.settings.queue) == 0
    assert sim.requests("primary") == 1  # the other job's call only
    assert client.get(cancelled).state is JobState.CANCELLED
    assert r.hget(keys.job(cancelled), "result") is None
    counters = read_counters(r)
    assert counters["cancelled"] == 1 and counters["succeeded"] == 1 and "dead" not in counters
    assert client.dead_letters() == []  # cancelled is not a dead letter

    # A cancel that loses the race with a result says so, and changes nothing.
    assert client.cancel(other) is CancelOutcome.ALREADY_SUCCEEDED
    after = client.get(other)
    assert after.state is JobState.SUCCEEDED and after.result is not None
    assert read_counters(r)["cancelled"] == 1
    with pytest.raises(JobNotFoundError):
        client.cancel("no-such-job")


@pytest.mark.parametrize("heard_by", ["message", "renewal"])
def test_cancelling_a_running_job_cuts_its_provider_call_and_writes_no_result(
    stack: Stack, r: redis.Redis, client: Client, sim: Sim, heard_by: str
) -> None:
    latency_s = 5.0
    sim.configure({"latency_s": latency_s})
    # message: renewals far apart (10 s), so only the published cancel can stop the call in time.
    # renewal: the cancel is published where nobody listens (a missed message), and the next
    # renewal (every 0.5 s here) must report it.
    timing = {"ASKQ_HEARTBEAT_S": "10", "ASKQ_LEASE_S": "30"} if heard_by == "message" else {}
    stack.start_worker(concurrency=4, ASKQ_CACHE_ENABLED="false", **timing)
    wait_workers(r, 1)
    job_id = client.submit("How long does delivery take?")
    wait_for(lambda: sim.stats()["in_flight"] == 1, 30, 0.02, what="the provider call to start")
    arrived = sim.stats()["arrivals"]["primary"][0]
    assert client.get(job_id).state is JobState.RUNNING
    asked = time.monotonic()
    if heard_by == "message":
        assert client.cancel(job_id) is CancelOutcome.CANCELLED
    else:
        cancel = scripts.register(r, "cancel")
        args = [job_id, time.time(), 3600, 3600, "askq:test:nobody-listens"]
        assert cancel(keys=cancel_keys(job_id), args=args) == "cancelled"
    # The connection is dropped: the simulator's handler is cancelled long before its answer.
    wait_for(lambda: sim.stats()["in_flight"] == 0, 4.0, 0.02, what="the provider call to be cut")
    cut_after_s = time.monotonic() - asked
    stats = sim.stats()
    # Proof that the call was cut and did not just end: the simulator let go of it sooner than
    # its latency (measured on its own clock from the request's arrival).
    assert stats["uptime_s"] - arrived < latency_s
    assert cut_after_s < 3.0, cut_after_s  # "within a second", bounded generously for a loaded host
    # The worker is done with the run (in flight 0 in its heartbeat) and wrote nothing.
    log = stack.var_dir / "worker0.log"
    wait_for(lambda: f"heard_by={heard_by}" in log.read_text(errors="replace"), 10, what="the worker to say how")
    assert "job_cancelled" in log.read_text(errors="replace")
    fields = r.hgetall(keys.job(job_id))
    assert fields["state"] == "cancelled" and fields["cancelled_from"] == "running"
    assert "result" not in fields and "result_writes" not in fields
    assert int(fields.get("late_writes", 0)) == 0
    assert r.zscore(keys.LEASES, job_id) is None
    time.sleep(0.5)  # a retry or another tier, if the run went on, would reach the simulator now
    assert sim.stats()["total_requests"] == 1
    assert client.get(job_id).result is None
    # The call was made, so it is counted; cut short by askq, it is no fault of the provider's.
    wait_for(lambda: read_counters(r).get("attempts:primary") == 1, 10, what="the run's counters")
    assert not [name for name in read_counters(r) if name.startswith(("errors:", "succeeded", "dead"))]
    assert r.hget(keys.breaker("primary"), "state") in (None, "closed")


def test_a_job_cancelled_in_durable_retry_is_never_retried(
    stack: Stack, r: redis.Redis, client: Client, sim: Sim
) -> None:
    sim.configure({"latency_s": 0.02, "faults": [{"kind": "server_error", "status": 503}]})
    # Full jitter up to 200 s: the retry is due far later than this test looks.
    stack.start_worker(concurrency=4, ASKQ_ON_EXHAUSTED="retry", ASKQ_DURABLE_RETRY_BASE_S="200",
                       ASKQ_DURABLE_RETRY_CAP_S="200", ASKQ_CACHE_ENABLED="false")
    wait_workers(r, 1)
    job_id = client.submit("Is my refund on its way?")
    wait_for(lambda: client.get(job_id).state is JobState.RETRYING, 30, 0.05, what="job retrying")
    calls = sim.stats()["total_requests"]
    assert calls >= 1
    assert client.cancel(job_id) is CancelOutcome.CANCELLED
    assert r.hget(keys.job(job_id), "cancelled_from") == "retrying"
    assert r.zscore(keys.RETRIES, job_id) is None
    # Even made due at once (as if its time had come), the reaper has nothing to re-enqueue.
    r.zadd(keys.RETRIES, {job_id: 0})
    wait_for(lambda: r.zscore(keys.RETRIES, job_id) is None, 10, what="the reaper to drop the retry")
    assert sim.stats()["total_requests"] == calls
    assert client.get(job_id).state is JobState.CANCELLED
    assert client.dead_letters() == []


def test_an_expired_job_is_never_run(stack: Stack, r: redis.Redis, client: Client, sim: Sim) -> None:
    job_id = client.submit("Can I still return this?", ttl_s=0.5)
    expires_at = client.get(job_id).expires_at
    assert expires_at is not None and expires_at <= time.time() + 1
    time.sleep(1.0)  # no worker until after it expired
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    view = client.wait(job_id, timeout=30)
    assert view.state is JobState.EXPIRED and view.result is None
    later = client.submit("And this one?")  # a job without expiry still runs
    assert client.wait(later, timeout=60).state is JobState.SUCCEEDED
    assert sim.requests("primary") == 1
    counters = read_counters(r)
    assert counters["expired"] == 1 and "dead" not in counters
    assert r.zcard(keys.EXPIRIES) == 0 and r.zscore(keys.PENDING, job_id) is None
    assert client.cancel(job_id) is CancelOutcome.ALREADY_EXPIRED


def test_the_reaper_expires_queued_jobs_without_a_free_worker(settings: Settings, r: redis.Redis,
                                                               client: Client) -> None:
    soon = client.submit("Expire me", expires_at=time.time() + 0.3)
    later = client.submit("Keep me", ttl_s=3600)
    plain = client.submit("No expiry")
    reaper = Reaper(r, settings)
    assert reaper.sweep()["expired"] == 0
    time.sleep(0.5)
    assert reaper.sweep()["expired"] == 1
    assert client.get(soon).state is JobState.EXPIRED
    assert client.get(later).state is JobState.QUEUED and client.get(plain).state is JobState.QUEUED
    assert r.zrange(keys.EXPIRIES, 0, -1) == [later]
    assert read_counters(r)["expired"] == 1
    assert read_health_window(r, 60)["expired"] == 1
    assert check_health(r, 60).expired == 1


def test_expiry_is_checked_on_every_way_in(settings: Settings, r: redis.Redis, client: Client,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for bad, problem in [({"ttl_s": 0}, "greater than 0"), ({"ttl_s": "10"}, "expected a number of seconds"),
                         ({"ttl_s": True}, "expected a number of seconds"),
                         ({"expires_at": time.time() * 1000}, "looks like milliseconds"),
                         ({"expires_at": float("inf")}, "finite"),
                         ({"ttl_s": 5, "expires_at": time.time() + 5}, "not both")]:
        with pytest.raises(InvalidJobError, match=problem):
            client.submit_many([{"question": "hi", **bad}])
    code, _, err = run_main(["submit", "hi", "--ttl", "-1"], capsys)
    assert code == 2 and "ttl_s" in err and "Traceback" not in err
    api = ApiSettings(tokens=[TOKEN])
    with TestClient(create_app(settings.model_copy(update={"api": api})),
                    headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        reply = http.post("/v1/jobs", json={"question": "hi", "ttl_s": -3})
        assert reply.status_code == 422 and "ttl_s" in reply.text
        reply = http.post("/v1/jobs", json={"question": "hi", "ttl_s": 60})
        assert reply.status_code == 202
        assert http.get(f"/v1/jobs/{reply.json()['id']}").json()["expires_at"] > time.time() + 50
    assert r.zcard(keys.PENDING) == 1


def test_bulk_cancel_by_metadata(settings: Settings, r: redis.Redis, client: Client,
                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.redis_url is not None
    monkeypatch.setenv("ASKQ_REDIS_URL", settings.redis_url.get_secret_value())  # for the CLI, run in process
    billing = [client.submit(f"Billing question {i}", metadata={"team": "billing", "n": i}) for i in range(7)]
    support = [client.submit(f"Support question {i}", metadata={"team": "support"}) for i in range(3)]
    number = client.submit("Priority one", metadata={"priority": 1})
    text = client.submit("Priority text", metadata={"priority": "1"})
    flag = client.submit("Priority flag", metadata={"priority": True})
    # Small batches, so the walk over the pending index takes several round trips.
    outcomes = client.store.cancel_where({"team": "billing"}, batch=3)
    assert outcomes == dict.fromkeys(billing, "cancelled")
    assert all(client.get(j).state is JobState.CANCELLED for j in billing)
    assert all(client.get(j).state is JobState.QUEUED for j in support)
    # Values match as JSON values: 1 is neither "1" nor true.
    assert client.cancel_where({"priority": 1}) == {number: "cancelled"}
    assert client.get(text).state is JobState.QUEUED and client.get(flag).state is JobState.QUEUED
    # The CLI: KEY=VALUE, a value read as JSON when it is one ("1" in quotes is the text).
    code, out, _ = run_main(["cancel", "--where", 'priority="1"'], capsys)
    assert code == 0 and out.split() == [text, "cancelled"]
    code, out, _ = run_main(["cancel", support[0], billing[0], "nope"], capsys)
    assert code == 1  # not every one was cancelled (now or before)
    assert out.splitlines() == [f"{support[0]}\tcancelled", f"{billing[0]}\talready_cancelled", "nope\tnot_found"]
    for argv, problem in [(["cancel"], "give job ids"), (["cancel", "--where", "team"], "KEY=VALUE"),
                          (["cancel", "x", "--where", "a=b"], "not both")]:
        code, _, err = run_main(argv, capsys)
        assert code == 2 and problem in err, err
    with pytest.raises(InvalidJobError, match="at least one"):
        client.cancel_where({})
    # The HTTP API: DELETE one job, POST /v1/jobs/cancel for a match; bad matches are 422s.
    api = ApiSettings(tokens=[TOKEN])
    with TestClient(create_app(settings.model_copy(update={"api": api})),
                    headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        assert http.delete(f"/v1/jobs/{support[1]}").json() == {"id": support[1], "outcome": "cancelled"}
        assert http.delete(f"/v1/jobs/{support[1]}").json() == {"id": support[1], "outcome": "already_cancelled"}
        assert http.delete("/v1/jobs/nope").status_code == 404
        reply = http.post("/v1/jobs/cancel", json={"where": {"team": "support"}})
        assert reply.json() == {"outcomes": {support[2]: "cancelled"}, "cancelled": 1}
        for where in ({"team": {"nested": 1}}, {}, "team=support"):
            reply = http.post("/v1/jobs/cancel", json={"where": where})
            assert reply.status_code == 422 and "where" in reply.text, reply.text
        assert "/v1/jobs/cancel" in http.get("/openapi.json").json()["paths"]
    assert client.get(flag).state is JobState.QUEUED
    assert read_counters(r)["cancelled"] == 7 + 1 + 1 + 3
    capsys.readouterr()  # the API's log lines
    code, out, _ = run_main(["stats", "--json"], capsys)
    assert code == 0 and json.loads(out)["cancelled"] == 12
    code, out, _ = run_main(["stats"], capsys)
    assert code == 0 and "cancelled" in out and "12" in out


def test_http_client_cancels_like_the_broker_client(stack: Stack, r: redis.Redis, client: Client) -> None:
    url, proc = serve_api(stack)
    http = HttpClient(url, token=TEST_API_TOKEN)
    try:
        job_id = http.submit("Where is my parcel?", metadata={"shop": "north"}, ttl_s=600)
        assert http.get(job_id).expires_at is not None
        assert http.cancel(job_id) is CancelOutcome.CANCELLED
        assert http.cancel(job_id) is CancelOutcome.ALREADY_CANCELLED
        assert http.wait(job_id, timeout=5).state is JobState.CANCELLED  # long-poll returns for it
        with pytest.raises(JobNotFoundError):
            http.cancel("nope")
        other = http.submit("And mine?", metadata={"shop": "north"})
        assert http.cancel_where({"shop": "north"}) == {other: "cancelled"}
        with pytest.raises(InvalidJobError, match="where"):
            http.cancel_where({"shop": ["a"]})
    finally:
        http.close()
        proc.terminate()
        proc.wait(15)


def test_no_write_of_a_run_lands_on_a_cancelled_job(settings: Settings, r: redis.Redis, client: Client) -> None:
    """A run that did not hear of the cancel yet: its result, durable retry and dead letter are all refused."""
    ids = [client.submit(f"Question {i}") for i in range(3)]
    now = time.time()

    async def scenario() -> list[str]:
        assert settings.redis_url is not None
        ar = aredis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
        jobs = WorkerJobState(ar, settings)
        tokens = [uuid.uuid4().hex for _ in ids]
        for job_id, token in zip(ids, tokens, strict=True):
            assert await jobs.claim(job_id, 1, token, "test:1") == "ok"
            assert client.cancel(job_id) is CancelOutcome.CANCELLED
        result = Result(job_id=ids[0], answer="late", source="primary", started=now, finished=now)
        out = [await jobs.finish(result, tokens[0], Counter(), {}),
               await jobs.defer(ids[1], tokens[1], now + 60, "503")]
        lost, cancelled = await jobs.renew(list(zip(ids, tokens, strict=True)))
        assert lost == [] and cancelled == list(zip(ids, tokens, strict=True))
        # A new delivery of a cancelled job is refused at claim.
        out.append((await jobs.claim_with(ids[2], 1, uuid.uuid4().hex, "test:2"))[0])
        await ar.aclose()
        return out

    assert asyncio.run(scenario()) == ["cancelled", "cancelled", "cancelled"]
    killed = DeadLetterQueue(r, settings).kill(ids[2], DeadReason.EXHAUSTED, "boom", payload={}, token="")
    assert killed == "terminal"
    for job_id in ids:
        fields = r.hgetall(keys.job(job_id))
        assert fields["state"] == "cancelled" and "result" not in fields
    assert r.zcard(keys.RETRIES) == 0 and r.zcard(keys.DLQ_INDEX) == 0
    counters = read_counters(r)
    assert counters["cancelled"] == 3 and "succeeded" not in counters and "late_writes" not in counters


def test_a_claim_past_expires_at_is_refused_and_ends_the_job(settings: Settings, r: redis.Redis,
                                                             client: Client) -> None:
    job_id = client.submit("Still wanted?", expires_at=time.time() + 0.3)
    keep = client.submit("Wanted for an hour", ttl_s=3600)
    time.sleep(0.5)

    async def scenario() -> list[str]:
        assert settings.redis_url is not None
        ar = aredis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
        jobs = WorkerJobState(ar, settings)
        out = [await jobs.claim(job_id, 1, uuid.uuid4().hex, "test:1"), await jobs.expire(job_id),
               await jobs.expire(job_id), await jobs.claim(keep, 1, uuid.uuid4().hex, "test:1"),
               await jobs.expire(keep)]
        await ar.aclose()
        return out

    # expired at claim; ended once; a job not yet due runs, and a run going is not stopped by expiry.
    assert asyncio.run(scenario()) == ["expired", "expired", "gone", "ok", "early"]
    assert client.get(job_id).state is JobState.EXPIRED
    assert client.get(keep).state is JobState.RUNNING
    assert read_counters(r)["expired"] == 1


def test_a_cancel_heard_before_its_run_starts_stops_it_before_any_call(
    settings: Settings, r: redis.Redis, client: Client, sim: Sim
) -> None:
    """The cancel's message and the claim's reply race on two connections: a cancel heard for a
    job with no run here yet stops the run that starts next, before its first provider call."""
    job_id = client.submit("Where is my order?")
    spec = parse_spec(json.loads(r.hget(keys.job(job_id), "payload") or "{}"))
    rt = Runtime(settings)
    try:
        assert rt.call(_cancel_heard(rt, job_id)) == 0  # no run here yet: remembered
        assert rt.call(execute(rt, spec, 1, "task-1")) == "cancelled"
        assert rt.runs == {}
    finally:
        rt.close()
    assert sim.requests("primary") == 0
    assert client.cancel(job_id) is CancelOutcome.CANCELLED  # (the state the real cancel had written)


async def _cancel_heard(rt: Runtime, job_id: str) -> int:
    return rt.cancel_job(job_id)  # on the loop, as the listener calls it
