"""The Python client other services use to submit jobs and read results (no worker code needed)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from config.settings import Settings, load_settings
from core.connection import connect
from core.deadletter import DeadLetter, DeadLetterQueue
from core.errors import InvalidJobError
from core.job import SUBMIT_FIELDS, DeadReason, JobSpec, JobView
from core.store import JobStore


def derive_idempotency_key(question: str, context: Sequence[str] = ()) -> str:
    """A key derived from the content, so the same question (and context) is answered once."""
    material = json.dumps([question, list(context)], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(material.encode()).hexdigest()


def idempotency_key_for(
    question: str, context: Sequence[str] | None, idempotency_key: str | None, derive_key: bool
) -> str | None:
    """The key a job is submitted with: the one given, else (derive_key) one derived from its content."""
    if derive_key and idempotency_key is None:
        return derive_idempotency_key(question, context or ())
    return idempotency_key



class Client:
    """Submit question jobs, wait for answers, and manage dead letters, straight on the broker."""

    def __init__(self, settings: Settings | None = None, redis_client: redis.Redis | None = None) -> None:
        self.settings = settings or load_settings()
        self.redis = redis_client or connect(self.settings)
        self.store = JobStore(self.redis, self.settings)
        self.dlq = DeadLetterQueue(self.redis, self.settings)

    def spec(
        self,
        question: str,
        context: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        derive_key: bool = False,
    ) -> JobSpec:
        """Validate a job without submitting it (InvalidJobError names the bad field)."""
        key = idempotency_key_for(question, context, idempotency_key, derive_key)
        return JobSpec.new(question, list(context or []), key, metadata)

    def submit(
        self,
        question: str,
        context: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        derive_key: bool = False,
    ) -> str:
        """Enqueue one job and return its id; the same idempotency key always returns the same id."""
        spec = self.spec(question, context, idempotency_key, metadata, derive_key)
        self.store.submit(spec)
        return spec.id

    def submit_many(self, jobs: Iterable[dict[str, Any]], derive_key: bool = False) -> list[str]:
        """Enqueue many jobs (dicts with question, context, idempotency_key, metadata), pipelined.

        Every job is validated before any is enqueued, so one bad job enqueues nothing.
        """
        specs = []
        for index, job in enumerate(jobs):
            extra = set(job) - set(SUBMIT_FIELDS)
            if extra:
                raise InvalidJobError(
                    f"job {index}: unknown field(s) {sorted(extra)}; allowed: {sorted(SUBMIT_FIELDS)}"
                )
            specs.append(self.spec(derive_key=derive_key, **job))
        self.store.submit_many(specs)
        return [s.id for s in specs]

    def get(self, job_id: str) -> JobView:
        return self.store.get(job_id)

    def wait(self, job_id: str, timeout: float = 60.0) -> JobView:
        """Block until the job succeeded or is dead; WaitTimeoutError after timeout seconds."""
        return self.store.wait(job_id, timeout)

    def wait_many(
        self, job_ids: Sequence[str], timeout: float = 60.0, on_progress: Callable[[int], None] | None = None
    ) -> dict[str, JobView]:
        """Poll many jobs until all are terminal or timeout seconds pass; the views of those found.

        on_progress(finished) is called after every poll (for a progress bar).
        """
        deadline = time.monotonic() + timeout
        while True:
            views = {k: v for k, v in self.store.get_many(job_ids).items() if v is not None}
            finished = sum(1 for v in views.values() if v.state.terminal)
            if on_progress is not None:
                on_progress(finished)
            if finished == len(job_ids) or time.monotonic() >= deadline:
                return views
            time.sleep(0.25)

    def dead_letters(
        self, reason: DeadReason | None = None, since: float | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return self.dlq.list(reason=reason, since=since, limit=limit)

    def dead_letter(self, record_id: str) -> DeadLetter:
        return self.dlq.show(record_id)

    def replay(self, record_id: str) -> str:
        """Re-enqueue a dead job; replaying the same record twice runs it once."""
        return self.dlq.replay(record_id)

    def replay_all(self, reason: DeadReason | None = None) -> dict[str, str]:
        return self.dlq.replay_many(reason)

    def purge_dead_letters(self, reason: DeadReason | None = None) -> int:
        return self.dlq.purge(reason)

    def close(self) -> None:
        self.redis.close()
