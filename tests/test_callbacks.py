"""Completion callbacks: signed, at least once with one webhook-id, never holding a job slot.

Real worker processes, the simulator, real Redis, and a real HTTP receiver on loopback
(tests/receiver.py). Signatures are checked with the independent `standardwebhooks` package.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from askq.config.settings import Settings, load_settings
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.job import JobState
from askq.errors import InvalidJobError
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers
from tests.receiver import receiving

SECRET = "whsec_" + base64.b64encode(b"askq-callback-test-key-0123456789").decode()
KEY_PART = SECRET.removeprefix("whsec_")

# Short timings so retries and giving up fit in seconds.
CALLBACK_ENV = {
    "ASKQ_CALLBACKS__ALLOWED_HOSTS": '["127.0.0.1"]',
    "ASKQ_CALLBACKS__SECRET": SECRET,
    "ASKQ_CALLBACKS__TIMEOUT_S": "1",
    "ASKQ_CALLBACKS__RETRY_BASE_S": "0.2",
    "ASKQ_CALLBACKS__RETRY_CAP_S": "0.4",
    "ASKQ_CALLBACKS__GIVE_UP_AFTER_S": "3",
    "ASKQ_CALLBACKS__POLL_S": "0.1",
}


def _client(stack: Stack, tmp_path: Path, **callbacks: object) -> Client:
    settings = load_settings(redis_url=stack.redis_url, var_dir=tmp_path,
                             callbacks={"allowed_hosts": ["127.0.0.1"], **callbacks})
    return Client(settings)


def _verified(received: list, view: dict) -> list[str]:  # type: ignore[type-arg]
    """Each request's webhook-id, after checking its signature and body with standardwebhooks."""
    ids = []
    for request in received:
        body = Webhook(SECRET).verify(request.body, request.headers)
        assert body == view
        ids.append(request.headers["webhook-id"])
    return ids


def test_receiver_failing_twice_gets_one_logical_delivery_signed(
    stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path,
) -> None:
    with receiving([503, 503, 200]) as receiver:
        stack.start_worker(concurrency=4, **CALLBACK_ENV)
        wait_workers(r, 1)
        client = _client(stack, tmp_path)
        job_id = client.submit("Where is my order?", callback_url=f"{receiver.url}/hooks/askq?team=billing")
        assert client.wait(job_id, timeout=30).state is JobState.SUCCEEDED

        wait_for(lambda: len(receiver.requests()) >= 3, 30, what="three attempts")
        wait_for(lambda: r.zcard(keys.CALLBACKS_DUE) == 0, 10, what="the delivery to be settled")
        time.sleep(1.0)  # room for a wrong fourth attempt
        received = receiver.requests()
        assert len(received) == 3
        view = json.loads(client.get(job_id).model_dump_json())
        ids = _verified(received, view)
        assert len(set(ids)) == 1 and job_id in ids[0]
        assert received[0].path == "/hooks/askq?team=billing"
        assert view["state"] == "succeeded" and view["result"]["answer"]
        assert r.hget(keys.STATS, "callbacks_delivered") == "1"
        assert r.hget(keys.STATS, "callbacks_retried") == "2"
        assert not r.keys(keys.callback("*"))


def test_a_dead_job_is_called_back_with_its_reason(stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path) -> None:
    sim.configure({"latency_s": 0.01, "require_key": "sk-not-the-one-askq-has-0000"})  # 401: permanent, dead
    with receiving([200]) as receiver:
        stack.start_worker(concurrency=4, **CALLBACK_ENV)
        wait_workers(r, 1)
        client = _client(stack, tmp_path)
        job_id = client.submit("What is your returns policy?", callback_url=receiver.url + "/dead")
        assert client.wait(job_id, timeout=30).state is JobState.DEAD
        wait_for(lambda: receiver.requests(), 30, what="the callback")
        view = json.loads(client.get(job_id).model_dump_json())
        _verified(receiver.requests(), view)
        assert view["state"] == "dead" and view["reason"] == "permanent_error"
        # A job without a callback enqueues nothing; one whose metadata merely has a key named
        # callback_url (the hook's plain search matches it) is dropped by the worker, not called.
        other = client.submit("And without a callback?")
        lookalike = client.submit("And a lookalike?", metadata={"callback_url": receiver.url})
        assert client.wait(other, timeout=30).state is JobState.DEAD
        assert client.wait(lookalike, timeout=30).state is JobState.DEAD
        wait_for(lambda: r.hget(keys.STATS, "callbacks_dropped") == "1", 10, what="the lookalike dropped")
        assert len(receiver.requests()) == 1
        assert r.get(keys.CALLBACKS_SEQ) == "2"


def test_receiver_that_never_answers_is_dead_lettered_and_replay_redelivers(
    stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path,
) -> None:
    with receiving(["hang"]) as receiver:
        stack.start_worker(concurrency=4, **CALLBACK_ENV)
        wait_workers(r, 1)
        client = _client(stack, tmp_path)
        job_id = client.submit("Can I change my delivery address?", callback_url=receiver.url + "/hook")
        assert client.wait(job_id, timeout=30).state is JobState.SUCCEEDED

        records = wait_for(lambda: client.dead_letters(reason=DeadReason.CALLBACK_FAILED), 30,
                           what="a callback_failed dead letter")
        record = records[0]
        assert record.job_id == job_id and record.id.startswith("msg_")
        assert "gave up after" in record.error and "no answer within 1 s" in record.error
        assert "/hook" not in record.error  # the path may hold a token: errors show scheme and host only
        attempts = len(receiver.requests())
        assert attempts >= 2 and record.deliveries == attempts
        assert client.get(job_id).state is JobState.SUCCEEDED  # the job keeps its outcome

        receiver.answer([200])
        replay = subprocess.run([sys.executable, "-m", "askq", "dlq", "replay", record.id], env=stack.env(),
                                capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout.strip() == f"{record.id}\tok"
        wait_for(lambda: len(receiver.requests()) > attempts and r.zcard(keys.CALLBACKS_DUE) == 0, 30,
                 what="the replayed delivery")
        received = receiver.requests()
        assert {q.headers["webhook-id"] for q in received} == {record.id}
        _verified(received[attempts:], json.loads(client.get(job_id).model_dump_json()))
        assert client.dead_letters(reason=DeadReason.CALLBACK_FAILED) == []
        again = subprocess.run([sys.executable, "-m", "askq", "dlq", "replay", record.id], env=stack.env(),
                               capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 or "ok" not in again.stdout  # a second replay delivers nothing more

        # The secret is nowhere: not in Redis, not in a dead letter, not in any log.
        stack.stop()
        everything = [json.dumps(r.hgetall(key)) if r.type(key) == "hash" else str(r.dump(key)) for key in r.keys("*")]
        everything += [p.read_text(errors="replace") for p in stack.var_dir.glob("*.log")]
        assert any("callback_failed" in text for text in everything)
        assert not [text for text in everything if KEY_PART in text or SECRET in text]


def test_redirect_is_not_followed(stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path) -> None:
    with receiving([200]) as elsewhere, receiving([(307, {"location": ""})]) as receiver:
        receiver.answer([(307, {"location": elsewhere.url + "/stolen"})])
        stack.start_worker(concurrency=4, **CALLBACK_ENV)
        wait_workers(r, 1)
        client = _client(stack, tmp_path)
        job_id = client.submit("Where is my refund?", callback_url=receiver.url + "/hook")
        records = wait_for(lambda: client.dead_letters(reason=DeadReason.CALLBACK_FAILED), 30,
                           what="a callback_failed dead letter")
        assert "307" in records[0].error and "redirects are not followed" in records[0].error
        assert records[0].job_id == job_id
        assert len(receiver.requests()) == 1  # a 3xx is not retried either
        assert elsewhere.requests() == []


def test_hanging_callbacks_hold_no_worker_slot(stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path) -> None:
    with receiving(["hang"]) as receiver:
        # Four job slots; a minute of timeout per attempt, so nothing frees a hung attempt meanwhile.
        stack.start_worker(concurrency=4, **{**CALLBACK_ENV, "ASKQ_CALLBACKS__TIMEOUT_S": "60",
                                             "ASKQ_CALLBACKS__GIVE_UP_AFTER_S": "600"})
        wait_workers(r, 1)
        client = _client(stack, tmp_path)
        hooked = client.submit_many([{"question": f"Hooked question {i}?", "callback_url": receiver.url}
                                     for i in range(100)])
        views = client.wait_many(hooked, timeout=120)
        assert all(v.state is JobState.SUCCEEDED for v in views.values()) and len(views) == 100
        wait_for(lambda: receiver.hanging >= 16, 30, what="callbacks.concurrency attempts hanging")
        others = client.submit_many([{"question": f"Other question {i}?"} for i in range(50)])
        views = client.wait_many(others, timeout=60)
        assert sum(v.state is JobState.SUCCEEDED for v in views.values()) == 50
        assert receiver.hanging >= 16  # still hanging all along
        assert r.zcard(keys.CALLBACKS_DUE) == 100


@pytest.mark.parametrize(("url", "problem"), [
    ("http://example.com/hook", "host 'example.com' is not in callbacks.allowed_hosts"),
    ("ftp://127.0.0.1/hook", "only http and https URLs"),
    ("file:///etc/passwd", "only http and https URLs"),
    ("http://user:pw@127.0.0.1/hook", "must not carry credentials"),
    ("http://127.0.0.1.evil.example/hook", "is not in callbacks.allowed_hosts"),
])
def test_bad_callback_urls_are_refused_at_submission(
    r: redis.Redis, settings: Settings, tmp_path: Path, url: str, problem: str,
) -> None:
    client = Client(settings.model_copy(update={"callbacks": load_settings(
        callbacks={"allowed_hosts": ["127.0.0.1"]}).callbacks}))
    with pytest.raises(InvalidJobError, match="callback_url: .*" + problem.replace(".", r"\.").replace("'", "'")):
        client.submit("Where is my order?", callback_url=url)
    with pytest.raises(InvalidJobError, match="job 1: callback_url"):
        client.submit_many([{"question": "fine"}, {"question": "bad", "callback_url": url}])
    # The CLI says so in one line, exit 2, and the jobs file path refuses the line.
    env = {"PATH": "/usr/bin:/bin", "ASKQ_REDIS_URL": settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
           "ASKQ_VAR_DIR": str(tmp_path), "ASKQ_CALLBACKS__ALLOWED_HOSTS": '["127.0.0.1"]'}
    cli = subprocess.run([sys.executable, "-m", "askq", "submit", "Where?", "--callback-url", url], env=env,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "callback_url" in cli.stderr and "Traceback" not in cli.stderr
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"question": "ok"}) + "\n" + json.dumps({"question": "q", "callback_url": url}) + "\n")
    cli = subprocess.run([sys.executable, "-m", "askq", "submit", "--file", str(jobs)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "line 2: callback_url" in cli.stderr
    assert r.keys(keys.job("*")) == []


def test_callbacks_are_refused_where_no_host_is_allowed(r: redis.Redis, settings: Settings) -> None:
    with pytest.raises(InvalidJobError, match="callbacks are not enabled here"):
        Client(settings).submit("Where is my order?", callback_url="http://127.0.0.1:9/hook")
    assert r.keys(keys.job("*")) == []


def test_the_api_takes_a_callback_url_and_refuses_one_outside_the_allow_list(
    r: redis.Redis, settings: Settings,
) -> None:
    from fastapi.testclient import TestClient

    from askq.producers.api import create_app

    allowed = settings.model_copy(update={"callbacks": load_settings(callbacks={"allowed_hosts": ["127.0.0.1"]})
                                          .callbacks})
    with TestClient(create_app(allowed), base_url="http://127.0.0.1") as api:  # no tokens: loopback names only
        ok = api.post("/v1/jobs", json={"question": "Where?", "callback_url": "http://127.0.0.1:9/hook"})
        assert ok.status_code == 202
        payload = json.loads(r.hget(keys.job(ok.json()["id"]), "payload") or "{}")
        assert payload["callback_url"] == "http://127.0.0.1:9/hook"
        bad = api.post("/v1/jobs", json={"jobs": [{"question": "a"}, {"question": "b",
                                                                      "callback_url": "http://10.0.0.1/hook"}]})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["field"] == "jobs.1.callback_url"
        assert "not in callbacks.allowed_hosts" in bad.json()["detail"][0]["problem"]
        schema = api.get("/openapi.json").json()["components"]["schemas"]["JobIn"]["properties"]["callback_url"]
        assert "127\\.0\\.0\\.1" in schema["anyOf"][0]["pattern"]
    assert len(r.keys(keys.job("*"))) == 1


def test_a_delivery_outlives_the_worker_that_wrote_the_result(
    stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path,
) -> None:
    with receiving(["hang", 200]) as receiver:
        # This worker answers the job but does not look for due callbacks for a minute.
        first = stack.start_worker(concurrency=4, **{**CALLBACK_ENV, "ASKQ_CALLBACKS__POLL_S": "60"})
        wait_workers(r, 1)
        client = _client(stack, tmp_path)
        job_id = client.submit("Where is my parcel?", callback_url=receiver.url + "/hook")
        assert client.wait(job_id, timeout=30).state is JobState.SUCCEEDED
        assert r.zcard(keys.CALLBACKS_DUE) == 1 and receiver.requests() == []
        stack.kill_worker(first)  # kill -9 right after the result write: the delivery is in Redis

        # The next worker takes it and hangs on the receiver; killed mid-attempt, its lease lapses.
        second = stack.start_worker(concurrency=4, **{**CALLBACK_ENV, "ASKQ_CALLBACKS__TIMEOUT_S": "2"})
        wait_for(lambda: receiver.hanging == 1, 30, what="an attempt hanging")
        stack.kill_worker(second)
        stack.start_worker(concurrency=4, **CALLBACK_ENV)
        wait_for(lambda: len(receiver.requests()) == 2 and r.zcard(keys.CALLBACKS_DUE) == 0, 40,
                 what="the delivery by a third worker")
        ids = _verified(receiver.requests(), json.loads(client.get(job_id).model_dump_json()))
        assert len(set(ids)) == 1


def test_two_workers_deliver_each_callback_once(stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path) -> None:
    with receiving([200]) as receiver:
        stack.start_worker(concurrency=8, **CALLBACK_ENV)
        stack.start_worker(concurrency=8, **CALLBACK_ENV)
        wait_workers(r, 2)
        client = _client(stack, tmp_path)
        ids = client.submit_many([{"question": f"Question {i}?", "callback_url": receiver.url} for i in range(40)])
        wait_for(lambda: len(receiver.requests()) >= 40 and r.zcard(keys.CALLBACKS_DUE) == 0, 60,
                 what="40 deliveries")
        time.sleep(1.0)
        received = receiver.requests()
        assert len(received) == 40
        assert {json.loads(q.body)["id"] for q in received} == set(ids)
        assert len({q.headers["webhook-id"] for q in received}) == 40


def test_urls_that_came_in_around_the_checks_are_not_called_nor_their_credentials_shown(
    stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path,
) -> None:
    from askq.broker import envelope
    from askq.core import scripts
    from askq.core.job import JobSpec, payload_text

    with receiving([200]) as receiver:
        stack.start_worker(concurrency=4, **CALLBACK_ENV)
        wait_workers(r, 1)
        submit = scripts.register(r, "submit")
        ids = []
        # As an older or foreign producer might store them: SUBMIT itself, no submission checks.
        for url in (receiver.url.replace("http://", "http://ops:hunter2-password@") + "/hook",
                    receiver.url.replace("127.0.0.1", "localhost") + "/hook"):
            spec = JobSpec.new("Where is my order?")
            payload = {**spec.model_dump(mode="json"), "callback_url": url}
            submit(keys=[keys.job(spec.id), keys.PENDING, "askq", keys.STATS],
                   args=[payload_text(payload), envelope.build("askq", payload, dispatch=1), time.time(), spec.id,
                         "askq"])
            ids.append(spec.id)
        client = _client(stack, tmp_path)
        # Credentials break the job contract: the job is dead invalid_payload; an unlisted host does not.
        assert client.wait(ids[0], timeout=30).reason is DeadReason.INVALID_PAYLOAD
        assert client.wait(ids[1], timeout=30).state is JobState.SUCCEEDED
        records = wait_for(lambda: (found := client.dead_letters(reason=DeadReason.CALLBACK_FAILED))
                           and len(found) == 2 and found, 30, what="two callback_failed dead letters")
        errors = {record.job_id: record.error for record in records}
        assert "must not carry credentials" in errors[ids[0]]
        assert "'localhost' is not in callbacks.allowed_hosts" in errors[ids[1]]
        assert receiver.requests() == []
        stack.stop()
        logs = [p.read_text(errors="replace") for p in stack.var_dir.glob("*.log")]
        views = [client.get(job_id).model_dump_json() for job_id in ids]
        assert not [text for text in [*errors.values(), *logs, *views] if "hunter2" in text]
