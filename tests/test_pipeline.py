"""End to end: a producer enqueues jobs, real Celery workers answer them through the simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from askq.config.settings import Settings, load_settings
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.job import JobState
from askq.errors import InvalidJobError
from askq.producers.client import Client
from askq.sim.answers import answer_for
from askq.stack import Stack
from tests.conftest import Sim, wait_workers


def test_worker_answers_submitted_jobs(stack: Stack, r: redis.Redis, settings: Settings) -> None:
    stack.start_worker(concurrency=20)
    wait_workers(r, 1)
    client = Client(settings)
    questions = [f"How do I return item {i}?" for i in range(20)]
    ids = client.submit_many([{"question": q} for q in questions])
    for job_id, question in zip(ids, questions, strict=True):
        view = client.wait(job_id, timeout=60)
        assert view.state is JobState.SUCCEEDED
        assert view.result is not None
        assert view.result.answer == answer_for(question, "primary")
        assert view.result.source == "primary"
        assert view.result.degraded is False
        assert view.result.usage.total > 0
        assert view.result.attempts == 1


def test_same_idempotency_key_gives_same_job(settings: Settings, r: redis.Redis) -> None:
    client = Client(settings)
    first = client.submit("Where is my parcel?", idempotency_key="order-1")
    second = client.submit("Where is my parcel?", idempotency_key="order-1")
    assert first == second
    assert r.llen(settings.queue) == 1


def test_invalid_job_is_refused_and_nothing_enqueued(settings: Settings, r: redis.Redis) -> None:
    client = Client(settings)
    with pytest.raises(InvalidJobError, match="question"):
        client.submit("")
    with pytest.raises(InvalidJobError, match="limit is"):
        client.submit("x" * (settings.max_question_chars + 1))
    with pytest.raises(InvalidJobError):
        client.submit_many([{"question": "fine"}, {"question": "bad", "colour": "red"}])
    assert r.llen(settings.queue) == 0


def test_oversized_job_late_in_a_large_batch_enqueues_nothing(settings: Settings, r: redis.Redis) -> None:
    """Writes go out in chunks; the limits are checked for all jobs before the first chunk."""
    client = Client(settings)
    jobs = [{"question": f"Question {i}?"} for i in range(700)]
    jobs.append({"question": "x" * (settings.max_question_chars + 1)})
    with pytest.raises(InvalidJobError, match="limit is"):
        client.submit_many(jobs)
    assert r.llen(settings.queue) == 0
    assert r.zcard(keys.PENDING) == 0


def test_cli_submit_and_wait(stack: Stack, r: redis.Redis, sim: Sim) -> None:
    stack.start_worker(concurrency=5)
    wait_workers(r, 1)
    env = stack.env()
    out = subprocess.run([sys.executable, "-m", "askq", "submit", "Can I pay by card?"],
                         env=env, capture_output=True, text=True, check=True)
    job_id = out.stdout.strip()
    waited = subprocess.run([sys.executable, "-m", "askq", "wait", job_id, "--timeout", "60"],
                            env=env, capture_output=True, text=True, check=True)
    view = json.loads(waited.stdout)
    assert view["state"] == "succeeded"
    assert view["result"]["answer"] == answer_for("Can I pay by card?", "primary")


def test_cli_rejects_unknown_setting(stack: Stack) -> None:
    env = stack.env(ASKQ_LEASE_SECONDS="3")
    out = subprocess.run([sys.executable, "-m", "askq", "stats"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "ASKQ_LEASE_SECONDS" in out.stderr


def test_job_refused_by_worker_limits_is_dead_not_requeued(stack: Stack, r: redis.Redis, tmp_path: Path) -> None:
    """A producer allowing longer questions than the workers: the job ends dead, once, never loops."""
    stack.start_worker(concurrency=2)
    wait_workers(r, 1)
    lenient = load_settings(redis_url=stack.redis_url, var_dir=tmp_path, max_question_chars=20000)
    client = Client(lenient)
    job_id = client.submit("why? " * 1800)  # 9000 characters; workers allow 8000
    view = client.wait(job_id, timeout=60)
    assert view.state is JobState.DEAD
    assert view.reason is DeadReason.INVALID_PAYLOAD
    records = client.dead_letters(reason=DeadReason.INVALID_PAYLOAD)
    assert [rec.id for rec in records] == [job_id]
    assert "limit is 8000" in records[0].error


def test_plain_celery_command_runs_an_askq_worker(stack: Stack, r: redis.Redis, settings: Settings) -> None:
    """`celery -A askq.workers worker` picks askq's pool, queue and transport from the settings."""
    log = open(stack.var_dir / "celery.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "askq.workers", "worker", "--loglevel", "info"],
                            env=stack.env(ASKQ_WORKER_CONCURRENCY="8"), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    stack.workers.append(proc)
    wait_workers(r, 1)
    client = Client(settings)
    view = client.wait(client.submit("Do you price match?"), timeout=60)
    assert view.state is JobState.SUCCEEDED
    assert view.result is not None and view.result.answer == answer_for("Do you price match?", "primary")
    banner = (stack.var_dir / "celery.log").read_text()
    assert "concurrency: 8 (thread)" in banner


def test_cli_waits_for_many_jobs_from_a_file(stack: Stack, r: redis.Redis, tmp_path: Path) -> None:
    stack.start_worker(concurrency=5)
    wait_workers(r, 1)
    env = stack.env()
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"Is item {i} in stock?"}) + "\n" for i in range(3)))
    submitted = subprocess.run([sys.executable, "-m", "askq", "submit", "--file", str(questions)],
                               env=env, capture_output=True, text=True, check=True)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(submitted.stdout)
    waited = subprocess.run([sys.executable, "-m", "askq", "wait", "--file", str(ids_file), "--timeout", "60"],
                            env=env, capture_output=True, text=True)
    assert waited.returncode == 0, waited.stderr
    views = [json.loads(line) for line in waited.stdout.splitlines()]
    assert [v["id"] for v in views] == submitted.stdout.split()
    assert {v["state"] for v in views} == {"succeeded"}
