"""Celery-native submission: another service with only `celery` installed enqueues with send_task.

The producer here is a separate Python process that cannot import any of askq's packages (its
path holds only the installed libraries, the editable install's hooks not run); it is checked.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import redis
from prometheus_client import generate_latest

from askq.config.settings import Settings
from askq.core import keys, message
from askq.core.deadletter import DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import JobState, job_id_for
from askq.core.metrics import registry_for
from askq.core.redisserver import EmbeddedRedis
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers

ROOT = Path(__file__).resolve().parent.parent

# Run with `python -I -S`: no site hooks (so no editable-install path), no script dir, no cwd.
PRODUCER = """
import json, sys
sys.path.append(sys.argv[1])
for name in ("askq", "config", "core", "producers", "workers", "sim", "bench"):
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(f"the producer could import {name!r}")
from celery import Celery

app = Celery("shop", broker=sys.argv[2])
for send in json.loads(sys.argv[3]):
    result = app.send_task("askq.answer", kwargs=send["kwargs"], queue=send.get("queue", "askq"),
                           task_id=send.get("task_id"))
    print(result.id)
"""


def send(tmp_path: Path, url: str, *sends: dict[str, Any]) -> list[str]:
    """Run the celery-only producer once; returns the task ids it sent."""
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run([sys.executable, "-I", "-S", str(script), site, url, json.dumps(sends)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_producer_cannot_import_askq(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text("import sys; sys.path.append(sys.argv[1]); import celery; import askq\n")
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run([sys.executable, "-I", "-S", str(script), site], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "No module named 'askq'" in done.stderr, done.stderr
    # ...while the same interpreter with its site hooks can: the check above is not vacuous.
    done = subprocess.run([sys.executable, "-c", "import askq.config, askq.core, askq.producers"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_send_task_from_a_celery_only_service_is_answered_and_seen(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, settings: Settings, sim: Sim, tmp_path: Path
) -> None:
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    [task_id] = send(tmp_path, redis_server.url, {"kwargs": {"job": {
        "question": "Where is my order?", "context": ["Order 42 shipped Monday."], "metadata": {"team": "shop"}}}})
    client = Client(settings)
    # The job id is the task id send_task returned.
    view = wait_for(lambda: (v := client.store.get_many([task_id])[task_id]) and v.state.terminal and v, 30,
                    what="the submitted job to finish")
    assert view.state is JobState.SUCCEEDED and view.result is not None and view.result.answer
    assert view.question == "Where is my order?"
    status = subprocess.run([sys.executable, "-m", "askq", "status", task_id], env=stack.env(),
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert status.returncode == 0 and "succeeded" in status.stdout, status.stdout + status.stderr
    assert r.hget(keys.STATS, "submitted") == "1"
    metrics = generate_latest(registry_for(r, settings)).decode()
    assert "askq_jobs_submitted_total 1.0" in metrics
    assert sim.requests("primary") == 1
    assert DeadLetterQueue(r, settings).count() == 0


def _captured(r: redis.Redis, queue: str) -> str:
    [raw] = r.lrange(queue, 0, -1)
    r.delete(queue)
    return str(raw)


def test_the_same_message_delivered_twice_is_one_job_and_one_result(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, settings: Settings, sim: Sim, tmp_path: Path
) -> None:
    # Celery's own bytes, captured on a queue no worker reads, then delivered twice at once.
    [task_id] = send(tmp_path, redis_server.url, {"queue": "capture", "kwargs": {"job": {"question": "Twice?"}}})
    raw = _captured(r, "capture")
    envelope = json.loads(raw)
    envelope["properties"]["delivery_info"]["routing_key"] = settings.queue
    r.lpush(settings.queue, json.dumps(envelope), json.dumps(envelope | {"redelivered": True}))
    # And the producer retrying with the same task id.
    send(tmp_path, redis_server.url, {"task_id": task_id, "kwargs": {"job": {"question": "Twice?"}}})
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    client = Client(settings)
    assert client.wait(task_id, timeout=30).state is JobState.SUCCEEDED
    wait_for(lambda: r.llen(settings.queue) == 0 and r.hlen(keys.KOMBU_UNACKED) == 0, 30,
             what="all three messages consumed and acked")
    assert r.hget(keys.STATS, "submitted") == "1"
    assert r.hget(keys.job(task_id), "result_writes") == "1"
    assert sim.requests("primary") == 1
    assert DeadLetterQueue(r, settings).count() == 0


def test_an_idempotency_key_sent_twice_is_one_job_shared_with_the_client(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, settings: Settings, sim: Sim, tmp_path: Path
) -> None:
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    job = {"question": "Refund status?", "idempotency_key": "refund-7"}
    send(tmp_path, redis_server.url, {"kwargs": {"job": job}}, {"kwargs": {"job": job}})
    client = Client(settings)
    job_id = job_id_for("refund-7")
    assert client.wait(job_id, timeout=30).state is JobState.SUCCEEDED
    wait_for(lambda: r.llen(settings.queue) == 0 and r.hlen(keys.KOMBU_UNACKED) == 0, 30,
             what="both messages consumed")
    assert client.submit("Refund status?", idempotency_key="refund-7") == job_id
    assert r.hget(keys.STATS, "submitted") == "1"
    assert sim.requests("primary") == 1


def test_a_malformed_send_task_is_dead_lettered_naming_the_problem(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, settings: Settings, sim: Sim, tmp_path: Path
) -> None:
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    big = "x" * (settings.max_question_chars + 1)
    cases = {
        "no question": ({"job": {"context": ["a doc"]}}, "question"),
        "context a string": ({"job": {"question": "Hi?", "context": "one doc"}}, "context"),
        "unknown field": ({"job": {"question": "Hi?", "colour": "red"}}, "colour"),
        "over the limit": ({"job": {"question": big}}, "limit is"),
        "a dispatch without a job id": ({"job": {"question": "Hi?"}, "dispatch": 2}, "dispatch"),
        "no job": ({"question": "Hi?"}, "job"),
        # The allow-list is the worker's setting (empty here: no callbacks at all).
        "a callback to a host not allowed": ({"job": {"question": "Hi?", "callback_url": "https://evil.example/h"}},
                                             "callback_url"),
    }
    task_ids = send(tmp_path, redis_server.url, *({"kwargs": kwargs} for kwargs, _ in cases.values()))
    dlq = DeadLetterQueue(r, settings)
    wait_for(lambda: dlq.count() >= len(cases), 30, what="a dead letter per malformed send_task")
    records = dlq.list(limit=50)
    for (name, (_, expected)), task_id in zip(cases.items(), task_ids, strict=True):
        # Each record keeps the message it came from: its task id is in there.
        [record] = [rec for rec in records if task_id in (rec.raw or "")]
        assert record.reason is DeadReason.INVALID_PAYLOAD, name
        assert expected in (record.error or ""), (name, record.error)
        assert not r.exists(keys.job(task_id)), name
    assert r.hget(keys.STATS, "submitted") is None
    assert sim.requests("primary") == 0
    # The worker still serves.
    [good] = send(tmp_path, redis_server.url, {"kwargs": {"job": {"question": "Still there?"}}})
    assert Client(settings).wait(good, timeout=30).state is JobState.SUCCEEDED


def test_a_task_id_that_cannot_be_a_job_id_is_refused_unless_a_key_names_the_job(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, settings: Settings, tmp_path: Path
) -> None:
    stack.start_worker(concurrency=2)
    wait_workers(r, 1)
    send(tmp_path, redis_server.url, {"task_id": "order 42/retry", "kwargs": {"job": {"question": "Hi?"}}},
         {"task_id": "order 43/retry", "kwargs": {"job": {"question": "Hi?", "idempotency_key": "o43"}}})
    dlq = DeadLetterQueue(r, settings)
    wait_for(lambda: dlq.count() >= 1, 30, what="the dead letter")
    assert "cannot name a job" in (dlq.list(limit=1)[0].error or "")
    assert Client(settings).wait(job_id_for("o43"), timeout=30).state is JobState.SUCCEEDED
    assert dlq.count() == 1


def test_a_message_for_an_expired_job_is_skipped_counted_and_logged(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, settings: Settings, tmp_path: Path
) -> None:
    proc = stack.start_worker(concurrency=2)
    wait_workers(r, 1)
    job = {"id": "gone1", "question": "Expired?", "context": [], "idempotency_key": None, "metadata": {},
           "created": 1.0}
    r.lpush(settings.queue, message.build(settings.queue, job, dispatch=3))
    wait_for(lambda: r.hget(keys.STATS, "unknown_job_messages") == "1", 30, what="the skip counted")
    assert DeadLetterQueue(r, settings).count() == 0
    assert not r.exists(keys.job("gone1"))
    log = (stack.var_dir / "worker0.log").read_text()
    line = next(line for line in log.splitlines() if "job_record_missing" in line)
    assert "gone1" in line and "warning" in line.lower()
    assert proc.poll() is None
    stats = subprocess.run([sys.executable, "-m", "askq", "stats"], env=stack.env(), capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert re.search(r"messages for expired jobs \(skipped\)\s*│\s*1\b", stats.stdout), stats.stdout


def test_celery_envelope_passes_the_contract_as_a_submission() -> None:
    from celery import Celery

    app = Celery("shop", broker="memory://")
    sent = app.amqp.create_task_message("t-1", "askq.answer", (), {"job": {"question": "Hi?"}})
    envelope = {"body": base64.b64encode(json.dumps(sent.body).encode()).decode(),
                "content-encoding": "utf-8", "content-type": "application/json", "headers": sent.headers,
                "properties": {**sent.properties, "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                               "delivery_info": {"exchange": "", "routing_key": "askq"}, "delivery_tag": "x"}}
    parsed = message.parse_envelope(json.loads(json.dumps(envelope)))
    assert isinstance(parsed, message.Submission) and parsed.request.question == "Hi?"


def test_a_submission_a_dead_worker_held_goes_back_unless_its_job_exists(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, settings: Settings, sim: Sim, tmp_path: Path
) -> None:
    # What a worker killed while holding two submissions leaves in kombu's unacked hash: one it
    # never got to (no job), one whose job it had created (the client also submitted that key).
    send(tmp_path, redis_server.url,
         {"queue": "capture", "kwargs": {"job": {"question": "Held?", "idempotency_key": "held-1"}}},
         {"queue": "capture", "kwargs": {"job": {"question": "Created?", "idempotency_key": "held-2"}}})
    held, created = (json.loads(raw) for raw in reversed(r.lrange("capture", 0, -1)))
    r.delete("capture")
    client = Client(settings)
    assert client.submit("Created?", idempotency_key="held-2") == job_id_for("held-2")
    for tag, env in (("tag-held", held), ("tag-created", created)):
        r.hset(keys.KOMBU_UNACKED, tag, json.dumps([env, "", settings.queue]))
        r.zadd(keys.KOMBU_UNACKED_INDEX, {tag: time.time() - 60})
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    # Back within the reaper's sweep, not kombu's visibility timeout (an hour).
    wait_for(lambda: r.exists(keys.job(job_id_for("held-1"))), 30, what="the held submission's job")
    assert client.wait(job_id_for("held-1"), timeout=30).state is JobState.SUCCEEDED
    assert client.wait(job_id_for("held-2"), timeout=30).state is JobState.SUCCEEDED
    wait_for(lambda: r.hlen(keys.KOMBU_UNACKED) == 0 and r.llen(settings.queue) == 0, 30,
             what="both unacked entries settled")
    assert r.hget(keys.STATS, "submitted") == "2"
    assert sim.requests("primary") == 2
    assert DeadLetterQueue(r, settings).count() == 0
