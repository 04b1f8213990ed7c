"""Bad messages already on the queue: each is dead-lettered as invalid_payload, never run, never a crash."""

from __future__ import annotations

import base64
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from askq.config.settings import Settings
from askq.core import keys, message
from askq.core.deadletter import DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import JobState, job_id_for
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers


class _Trap:
    """Unpickling this creates a file: proof that pickle was never loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _job(job_id: str, question: str = "Where is my order?", **extra: Any) -> dict[str, Any]:
    return {"id": job_id, "question": question, "context": [], "idempotency_key": None, "metadata": {},
            "created": time.time(), **extra}


def _envelope(body: bytes, content_type: str = "application/json", task: str = message.TASK_NAME) -> str:
    env = json.loads(message.build("askq", _job("x"), dispatch=1))
    env["body"] = base64.b64encode(body).decode()
    env["content-type"] = content_type
    env["headers"]["task"] = task
    env["headers"]["kwargsrepr"] = "{}"
    return json.dumps(env)


def _task_body(kwargs: dict[str, Any]) -> bytes:
    return json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()


def _bad_entries(settings: Settings, trap: Path) -> dict[str, str]:
    big = "x" * (settings.max_question_chars + 1)
    return {
        "body not JSON": _envelope(b"{this is not json"),
        "pickle": _envelope(pickle.dumps(_Trap(trap)), content_type="application/x-python-serialize"),
        "unknown task": _envelope(_task_body({"job": _job("unknowntask1")}), task="askq.nonexistent"),
        "missing job": _envelope(_task_body({"dispatch": 1})),
        "missing question": _envelope(_task_body({"job": {"id": "missingq1", "created": 1.0}, "dispatch": 1})),
        "extra message field": _envelope(_task_body({"job": _job("extra1"), "dispatch": 1, "colour": "red"})),
        "extra job field": _envelope(_task_body({"job": _job("extra2", colour="red"), "dispatch": 1})),
        "oversized question": _envelope(_task_body({"job": _job("big1", question=big), "dispatch": 1})),
        "raw garbage": "\x00garbage that is not even JSON }}}",
        "body not base64": json.dumps(json.loads(_envelope(b"x")) | {"body": "%%% not base64 %%%"}),
        "JSON object, no envelope": json.dumps({"hello": "world"}),
        "JSON but no envelope": json.dumps([1, 2, 3]),
    }


def test_each_bad_message_is_dead_lettered_and_worker_keeps_serving(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim, tmp_path: Path
) -> None:
    proc = stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    client = Client(settings)
    dlq = DeadLetterQueue(r, settings)
    trap = tmp_path / "unpickled"
    errors: dict[str, str] = {}
    for count, (kind, entry) in enumerate(_bad_entries(settings, trap).items(), start=1):
        r.lpush(settings.queue, entry)
        wait_for(lambda n=count: dlq.count() >= n, 20, what=f"dead letter for {kind}")  # type: ignore[misc]
        newest = dlq.list(limit=1)[0]
        assert newest.reason is DeadReason.INVALID_PAYLOAD, kind
        assert newest.error, kind
        errors[kind] = newest.error
        # The worker is still serving: the next good job is answered.
        job_id = client.submit(f"Good question after {kind}?")
        assert client.wait(job_id, timeout=30).state is JobState.SUCCEEDED, kind
        assert proc.poll() is None, kind
    assert not trap.exists(), "a pickle payload was unpickled"
    assert "not a JSON message envelope" in errors["raw garbage"]
    assert "not a message envelope" in errors["JSON but no envelope"]
    assert "not base64" in errors["body not base64"]
    assert "pickle" in errors["pickle"] or "x-python-serialize" in errors["pickle"]
    assert "askq.nonexistent" in errors["unknown task"]
    assert "limit is" in errors["oversized question"]
    assert sim.requests("primary") == count  # only the good jobs reached the LLM
    for name in ("unknowntask1", "missingq1", "extra1", "extra2", "big1"):
        assert not r.exists(keys.job(name))
    assert dlq.count() == count
    assert r.llen(settings.queue) == 0


def test_bad_message_never_touches_the_job_it_names(settings: Settings, r: redis.Redis) -> None:
    client = Client(settings)
    job_id = client.submit("Can I change my address?", idempotency_key="addr-1")
    assert job_id == job_id_for("addr-1")
    DeadLetterQueue(r, settings).kill(job_id, DeadReason.INVALID_PAYLOAD, "forged message", raw="{}")
    assert client.get(job_id).state is JobState.QUEUED


@pytest.mark.parametrize("field", ["question", "created"])
def test_submit_refuses_missing_field_with_its_name(settings: Settings, field: str) -> None:
    from askq.core.job import parse_spec
    from askq.errors import InvalidJobError

    job = _job("abc")
    del job[field]
    with pytest.raises(InvalidJobError, match=field):
        parse_spec(job)
