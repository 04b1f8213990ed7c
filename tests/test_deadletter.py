"""Dead letters, replay, durable retry and final results, as operators and producers rely on them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import redis
import redis.asyncio as aredis

from askq.config.settings import Settings
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import JobState, Result
from askq.producers.client import Client
from askq.stack import Stack
from askq.workers.transitions import JobTransitions
from tests.conftest import Sim, wait_for, wait_workers

ALL_FAIL = {"kind": "bad_request"}


def test_double_replay_runs_once(stack: Stack, r: redis.Redis, settings: Settings, sim: Sim) -> None:
    sim.configure({"latency_s": 0.02, "faults": [ALL_FAIL]})
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    client = Client(settings)
    job_id = client.submit("How do I cancel my subscription?", idempotency_key="cancel-1")
    dead = client.wait(job_id, timeout=30)
    assert dead.state is JobState.DEAD and dead.reason is DeadReason.PERMANENT_ERROR
    record = client.dead_letter(job_id)
    assert record.payload is not None and record.payload["question"] == "How do I cancel my subscription?"
    assert record.error and record.dead_at >= record.created  # type: ignore[operator]
    sim.configure({"latency_s": 0.3})  # healthy again; slow enough that both replays race one run
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(client.replay(job_id))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["not_dead", "ok"]
    assert client.replay(job_id) == "not_dead"
    view = client.wait(job_id, timeout=30)
    assert view.state is JobState.SUCCEEDED
    time.sleep(1.0)  # let any second run, if one had been enqueued, reach the simulator
    assert sim.requests("primary") == 1
    assert int(r.hget(keys.job(job_id), "result_writes") or 0) == 1
    assert client.dead_letters() == []


def test_durable_retry_reruns_later_then_exhausts(stack: Stack, r: redis.Redis, settings: Settings, sim: Sim) -> None:
    # Every tier fails transiently until the job is parked for a durable retry, then recovers (a fault
    # window in seconds would end before a slow worker, on a loaded machine, ever made its first call).
    sim.configure({"latency_s": 0.02, "faults": [{"kind": "server_error", "status": 503}]})
    env = {"ASKQ_ON_EXHAUSTED": "retry", "ASKQ_DURABLE_RETRY_BASE_S": "2", "ASKQ_DURABLE_RETRY_CAP_S": "3",
           "ASKQ_CACHE_ENABLED": "false"}
    stack.start_worker(concurrency=4, **env)
    wait_workers(r, 1)
    client = Client(settings)
    job_id = client.submit("Is my refund on its way?")
    wait_for(lambda: client.get(job_id).state is JobState.RETRYING, 30, what="job retrying")
    assert r.zscore(keys.RETRIES, job_id) is not None
    sim.configure({"latency_s": 0.02, "faults": []})
    view = client.wait(job_id, timeout=40)
    assert view.state is JobState.SUCCEEDED
    assert view.result is not None and not view.result.degraded
    assert int(r.hget(keys.job(job_id), "retries") or 0) >= 1
    assert int(r.hget(keys.job(job_id), "result_writes") or 0) == 1

    # Beyond max_job_age_s a failing job is dead-lettered as exhausted instead of retried again.
    stack.stop()
    r.delete(keys.WORKERS)
    sim.configure({"latency_s": 0.02, "faults": [{"kind": "server_error", "status": 503}]})
    stack.start_worker(concurrency=4, ASKQ_MAX_JOB_AGE_S="3", **env)
    wait_workers(r, 1)
    old = client.submit("Where is my invoice?")
    dead = client.wait(old, timeout=40)
    assert dead.state is JobState.DEAD and dead.reason is DeadReason.EXHAUSTED
    assert client.dead_letter(old).reason is DeadReason.EXHAUSTED


def test_stored_result_is_final_and_late_writes_are_refused_and_counted(settings: Settings, r: redis.Redis) -> None:
    client = Client(settings)
    job_id = client.submit("What is your returns policy?")

    def result(source: str, degraded: bool) -> Result:
        now = time.time()
        return Result(job_id=job_id, answer=f"from {source}", source=source, degraded=degraded,
                      started=now, finished=now)

    async def scenario() -> list[str]:
        ar = aredis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)  # type: ignore[union-attr]
        jobs = JobTransitions(ar, settings)
        token = uuid.uuid4().hex
        assert (await jobs.claim(job_id, 1, token, "test:1")).outcome == "ok"
        out = [await jobs.finish(result("default", True), token, Counter(), {})]
        # The writer retrying a write whose reply it lost: done, once.
        out.append(await jobs.finish(result("default", True), token, Counter(), {}))
        # Late runs (a resumed worker, a Celery redelivery) hold no lease on the job now: even a
        # better answer than the stored degraded one is refused.
        out.append(await jobs.finish(result("cache", True), uuid.uuid4().hex, Counter(), {}))
        out.append(await jobs.finish(result("primary", False), uuid.uuid4().hex, Counter(), {}))
        out.append(await jobs.finish(result("secondary", False), uuid.uuid4().hex, Counter(), {}))
        await ar.aclose()
        return out

    assert asyncio.run(scenario()) == ["ok", "ok", "late", "late", "late"]
    view = client.get(job_id)
    assert view.result is not None and view.result.source == "default" and view.result.degraded
    assert r.hget(keys.job(job_id), "result_writes") == "1"
    assert r.hget(keys.job(job_id), "late_writes") == "3"
    assert r.hget(keys.STATS, "late_writes") == "3"


def test_dead_letters_are_trimmed_by_count_and_age(settings: Settings, r: redis.Redis) -> None:
    dlq = DeadLetterQueue(r, settings.model_copy(update={"dlq_max_records": 3}))
    ids = []
    for i in range(5):
        ids.append(uuid.uuid4().hex)
        dlq.kill(ids[-1], DeadReason.PERMANENT_ERROR, f"error {i}", payload={"id": ids[-1], "question": "q"})
        time.sleep(0.01)
    assert dlq.count() == 3
    assert [d.id for d in dlq.list()] == ids[:1:-1]  # newest first, the two oldest gone
    assert not r.exists(keys.dead_letter(ids[0]))
    assert dlq.trim(now=time.time() + settings.dlq_max_age_s + 1) == 3
    assert dlq.count() == 0 and not r.exists(keys.dead_letter(ids[-1]))


def test_dlq_cli_list_show_replay_and_purge_asks_first(stack: Stack, settings: Settings, r: redis.Redis) -> None:
    dlq = DeadLetterQueue(r, settings)
    client = Client(settings)
    job_id = client.submit("Do you price match?")
    for reason in (DeadReason.PERMANENT_ERROR, DeadReason.INVALID_PAYLOAD):
        dlq.kill(job_id if reason is DeadReason.PERMANENT_ERROR else None, reason, f"boom {reason}",
                 payload=json.loads(str(r.hget(keys.job(job_id), "payload"))))
    env = stack.env()

    def askq(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "askq", "dlq", *args], env=env, input=stdin,
                              capture_output=True, text=True, timeout=60)

    listed = json.loads(askq("list", "--reason", "permanent_error", "--json").stdout)
    assert [(d["id"], d["reason"]) for d in listed] == [(job_id, "permanent_error")]
    assert len(json.loads(askq("list", "--json", "--since", "60").stdout)) == 2
    shown = json.loads(askq("show", job_id).stdout)
    assert shown["reason"] == "permanent_error" and shown["payload"]["question"] == "Do you price match?"
    assert askq("purge", stdin="n\n").returncode == 1
    assert dlq.count() == 2
    assert askq("purge", "--reason", "invalid_payload", stdin="").returncode == 1  # no answer means no
    assert askq("replay", job_id).stdout.split() == [job_id, "ok"]
    assert askq("replay", job_id).stdout.split() == [job_id, "not_dead"]
    assert client.get(job_id).state is JobState.QUEUED
    assert askq("purge", stdin="y\n").stdout.strip() == "1"
    dlq.kill(None, DeadReason.INVALID_PAYLOAD, "again", raw="x")
    purged = askq("purge", "--yes")
    assert purged.returncode == 0 and purged.stdout.strip() == "1"
    assert dlq.count() == 0


def _askq_json(stack: Stack, *args: str) -> object:
    out = subprocess.run([sys.executable, "-m", "askq", *args], env=stack.env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_dead_job_and_its_dead_letter_tell_the_same_counts(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    sim.configure({"latency_s": 0.02, "faults": [ALL_FAIL]})
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    client = Client(settings)
    job_id = client.submit("Can I get a refund for a damaged item?")
    assert client.wait(job_id, timeout=30).state is JobState.DEAD
    status = _askq_json(stack, "status", job_id)
    shown = _askq_json(stack, "dlq", "show", job_id)
    assert isinstance(status, dict) and isinstance(shown, dict)
    calls = [a for a in shown["history"] if a["outcome"] != "skipped"]
    assert len(calls) >= 2  # a permanent error on each tier
    assert status["delivery"] == shown["deliveries"] == 1
    assert status["attempts"] == len(calls)
    assert client.get(job_id).attempts == len(calls) and client.dead_letter(job_id).deliveries == 1
    # Replayed, the job starts counting again and shows no stale attempts meanwhile.
    sim.configure({"latency_s": 0.02})
    assert client.replay(job_id) == "ok"
    view = client.wait(job_id, timeout=30)
    assert view.state is JobState.SUCCEEDED and view.delivery == 1 and view.attempts == 1


def test_a_dead_job_lives_as_long_as_its_dead_letter(settings: Settings, r: redis.Redis) -> None:
    """One truth per job id: past result_ttl_s a dead job is still dead, listed and replayable."""
    short = settings.model_copy(update={"result_ttl_s": 1, "dlq_max_age_s": 120})
    client, dlq = Client(short), DeadLetterQueue(r, short)
    job_id = client.submit("Is the warranty transferable?", idempotency_key="warranty-7")
    payload = json.loads(str(r.hget(keys.job(job_id), "payload")))
    assert dlq.kill(job_id, DeadReason.PERMANENT_ERROR, "refused", payload=payload, expect_state="queued") == "ok"
    assert r.ttl(keys.job(job_id)) > short.result_ttl_s
    time.sleep(short.result_ttl_s + 0.5)  # past the result TTL, well within the dead letter's
    assert client.submit("Is the warranty transferable?", idempotency_key="warranty-7") == job_id
    assert client.get(job_id).state is JobState.DEAD
    assert [d.id for d in client.dead_letters()] == [job_id]
    assert client.replay(job_id) == "ok"
    assert client.get(job_id).state is JobState.QUEUED and r.ttl(keys.job(job_id)) == -1


def test_trimmed_or_purged_dead_letter_takes_its_dead_job_along(settings: Settings, r: redis.Redis) -> None:
    capped = settings.model_copy(update={"dlq_max_records": 1})
    client, dlq = Client(capped), DeadLetterQueue(r, capped)
    first = client.submit("Do you ship abroad?", idempotency_key="abroad")
    second = client.submit("Do you ship to islands?", idempotency_key="islands")
    for job_id in (first, second):
        payload = json.loads(str(r.hget(keys.job(job_id), "payload")))
        dlq.kill(job_id, DeadReason.PERMANENT_ERROR, "refused", payload=payload)
        time.sleep(0.01)
    assert [d.id for d in dlq.list()] == [second]
    # The trimmed record's job went with it: its key submits a fresh job, not a dead one.
    assert not r.exists(keys.job(first))
    assert client.submit("Do you ship abroad?", idempotency_key="abroad") == first
    assert client.get(first).state is JobState.QUEUED
    assert client.purge_dead_letters() == 1
    assert not r.exists(keys.job(second))
    assert client.purge_dead_letters() == 0 and client.get(first).state is JobState.QUEUED


def test_concurrent_replays_of_a_job_that_dies_again_at_once_run_it_once(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    """Five `askq dlq replay ID` at the same moment; the job dies again as soon as it runs."""
    stack.start_worker(concurrency=8)
    wait_workers(r, 1)
    client = Client(settings)
    job_id = client.submit("Please escalate [[sim:bad_request]] my ticket")
    assert client.wait(job_id, timeout=30).state is JobState.DEAD
    dispatch = int(r.hget(keys.job(job_id), "dispatch") or 0)
    sim.reset()
    # Started at one moment, they reach Redis at different times, as on a loaded machine: each
    # later one finds the job dead again (and would replay that newer death without the fix).
    code = "import sys, time; time.sleep(float(sys.argv[1])); from askq.cli import main; sys.exit(main(sys.argv[2:]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(0.6 * i), "dlq", "replay", job_id], env=stack.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(5)]
    outcomes = Counter(proc.communicate(timeout=60)[0].split()[-1] for proc in procs)
    assert outcomes["ok"] == 1, outcomes
    assert set(outcomes) <= {"ok", "not_dead", "newer"}, outcomes
    # It ran once more and died once more: one new dispatch, one record, the calls of one run.
    wait_for(lambda: client.get(job_id).state is JobState.DEAD, 30, what="job dead again")
    time.sleep(1.0)  # a second replay, had one been let through, would have run by now
    assert int(r.hget(keys.job(job_id), "dispatch") or 0) == dispatch + 1
    assert client.get(job_id).state is JobState.DEAD and [d.id for d in client.dead_letters()] == [job_id]
    assert sim.requests("primary") == 1
    # Asked now, after that death, a replay runs the job again.
    assert client.replay(job_id) == "ok"


def test_dlq_list_refuses_a_since_that_is_not_a_positive_number(stack: Stack) -> None:
    # `--since nan` reached Redis and came back as "Redis failed: ... min or max is not a float".
    for bad in ("nan", "-5", "0", "inf", "soon"):
        out = subprocess.run([sys.executable, "-m", "askq", "dlq", "list", "--since", bad], env=stack.env(),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (bad, out.stderr)
        assert "--since" in out.stderr and "Redis" not in out.stderr and "Traceback" not in out.stderr, out.stderr
