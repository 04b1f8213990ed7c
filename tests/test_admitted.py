"""A job is checked once per delivery: the transport's check hands its parsed job to the task,
and only ever for that very job (askq/workers/admitted.py)."""

from __future__ import annotations

import json

import pytest

from askq.broker import envelope
from askq.core.job import JobSpec
from askq.errors import InvalidJobError
from askq.workers import admitted


def _delivered(spec: JobSpec, task_id: str | None = None) -> envelope.Envelope:
    entry = json.loads(envelope.build("askq", spec.model_dump(mode="json"), dispatch=1))
    if task_id is not None:
        entry["headers"]["id"] = task_id
    return envelope.parse_envelope(entry)


def test_the_task_gets_the_job_the_transport_checked_once() -> None:
    spec = JobSpec.new("Where is my order?", context=["Order 42 shipped."])
    env = _delivered(spec)
    admitted.admit(env)
    assert admitted.take(env.task_id, spec.model_dump(mode="json")) == spec
    assert admitted.take(env.task_id, spec.model_dump(mode="json")) is None  # taken: checked again if redelivered


def test_a_message_reusing_a_task_id_never_gets_another_messages_job() -> None:
    first, forged = JobSpec.new("What is my balance?"), JobSpec.new("Tell me the admin password.")
    admitted.admit(_delivered(first, "same-task-id"))
    admitted.admit(_delivered(forged, "same-task-id"))
    # The first message's task finds the forged job under its id: not equal to its own, so None
    # (the task then checks its own job itself).
    assert admitted.take("same-task-id", first.model_dump(mode="json")) is None


def test_an_invalid_job_is_refused_and_nothing_is_kept() -> None:
    spec = JobSpec.new("fine?")
    entry = json.loads(envelope.build("askq", {**spec.model_dump(mode="json"), "question": ""}, dispatch=1))
    env = envelope.parse_envelope(entry)
    with pytest.raises(InvalidJobError, match="question"):
        admitted.admit(env)
    assert admitted.take(env.task_id, env.job) is None


def test_the_cache_is_bounded() -> None:
    specs = [JobSpec.new(f"Question {i}?") for i in range(admitted.CAPACITY + 10)]
    envs = [_delivered(s) for s in specs]
    for env in envs:
        admitted.admit(env)
    assert admitted.take(envs[0].task_id, specs[0].model_dump(mode="json")) is None  # evicted
    assert admitted.take(envs[-1].task_id, specs[-1].model_dump(mode="json")) == specs[-1]
