"""The job contract: what a producer submits, what a worker stores, what a reader gets back."""

from __future__ import annotations

import json
import time
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import InvalidJobError, describe_validation

# Idempotency keys map to job ids deterministically, so concurrent submitters agree on the id.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5f1c7a2e-3b0d-4a57-9a8e-0c5d1e7b2a41")


class JobState(StrEnum):
    """Where a job is: queued -> running -> succeeded | dead (retrying waits for a durable retry)."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.DEAD)


class DeadReason(StrEnum):
    """Why a job was dead-lettered."""

    POISON = "poison"
    PERMANENT_ERROR = "permanent_error"
    EXHAUSTED = "exhausted"
    INVALID_PAYLOAD = "invalid_payload"
    # askq's own code or the job's own data failed (e.g. text that cannot be encoded into a
    # request): not a provider's fault, so no breaker counted it and no tier retried it.
    INTERNAL_ERROR = "internal_error"


class JobRequest(BaseModel):
    """What a producer submits: the question and what goes with it, before askq gives it an id."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    context: list[str] = Field(default_factory=list)
    idempotency_key: str | None = Field(None, min_length=1, max_length=256)
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


# The one list of fields a producer may give (client, CLI file, HTTP API all check against it).
SUBMIT_FIELDS: tuple[str, ...] = tuple(JobRequest.model_fields)


class JobSpec(JobRequest):
    """What a producer asks plus its id and creation time (the message payload)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    created: float

    @classmethod
    def new(
        cls,
        question: str,
        context: list[str] | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> JobSpec:
        job_id = job_id_for(idempotency_key) if idempotency_key else uuid.uuid4().hex
        return parse_spec(
            {
                "id": job_id,
                "question": question,
                "context": context or [],
                "idempotency_key": idempotency_key,
                "metadata": metadata or {},
                "created": time.time(),
            }
        )


class TokenUsage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: int = 0
    completion: int = 0
    total: int = 0


class Result(BaseModel):
    """A stored answer: which tier gave it, how, and how long it took."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    answer: str
    source: str  # provider name, "cache" or "default"
    model: str | None = None
    degraded: bool = False
    attempts: int = 0
    latency_s: float = 0.0
    usage: TokenUsage = TokenUsage()
    started: float
    finished: float


class JobView(BaseModel):
    """A job as a reader sees it: state plus result or dead-letter reason."""

    model_config = ConfigDict(extra="forbid")

    id: str
    state: JobState
    question: str
    created: float
    updated: float | None = None
    delivery: int = 0
    attempts: int = 0
    result: Result | None = None
    reason: DeadReason | None = None
    error: str | None = None


def payload_text(payload: dict[str, Any]) -> str:
    """A job payload as the job hash stores it; the dead-letter queue compares messages against it."""
    return json.dumps(payload, separators=(",", ":"))


def job_id_for(idempotency_key: str) -> str:
    """The job id an idempotency key always maps to."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, idempotency_key).hex


def parse_spec(data: Any) -> JobSpec:
    """Validate a payload, raising InvalidJobError that names each bad field and its problem."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidJobError(describe_validation(exc)) from None


def check_limits(spec: JobSpec, max_question_chars: int, max_docs: int, max_context_chars: int) -> None:
    """Refuse oversized jobs with a message that says which limit was passed."""
    if len(spec.question) > max_question_chars:
        raise InvalidJobError(f"question: {len(spec.question)} characters, limit is {max_question_chars}")
    if len(spec.context) > max_docs:
        raise InvalidJobError(f"context: {len(spec.context)} documents, limit is {max_docs}")
    total = sum(len(doc) for doc in spec.context)
    if total > max_context_chars:
        raise InvalidJobError(f"context: {total} characters, limit is {max_context_chars}")
