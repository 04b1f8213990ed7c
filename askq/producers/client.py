"""The Python client other services use to submit jobs and read results (no worker code needed)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis

from askq.config.settings import Settings, explicit_settings, load_settings
from askq.core.connection import connect
from askq.core.deadletter import DeadLetter, DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import (
    SUBMIT_FIELDS,
    CancelOutcome,
    JobSpec,
    JobView,
    check_limits,
    key_conflicts,
    kind_of,
    parse_request,
    request_data,
)
from askq.core.store import JobStore
from askq.core.webhook import check_callback
from askq.errors import InvalidJobError


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


# A refused batch lists this many bad jobs, then says how many more there are.
MAX_LISTED = 20


def prepare_job(job: Any, settings: Settings | None = None, derive_key: bool = False,
                from_json: bool = False) -> JobSpec:
    """One job (a dict of SUBMIT_FIELDS) checked whole and given its id; InvalidJobError names each problem.

    A Python caller's None means "not given"; a JSON line's null (from_json) is refused as the
    API refuses it. The limits are checked when settings are given (the HTTP client leaves them
    to the server, which knows its own).
    """
    if not isinstance(job, Mapping):
        raise InvalidJobError(f'expected an object (dict) with a "question", got {kind_of(job)}')
    extra = set(job) - set(SUBMIT_FIELDS)
    if extra:
        raise InvalidJobError(
            f"unknown field(s) {sorted(extra, key=str)!a}; allowed: {sorted(SUBMIT_FIELDS)}"
        )
    # A Python None (but not a JSON null) is the field left out, as in submit()'s keywords.
    request = parse_request(job if from_json else {k: v for k, v in job.items() if v is not None or k == "question"})
    key = idempotency_key_for(request.question, request.context, request.idempotency_key, derive_key)
    spec = JobSpec.of(request, key)
    if settings is not None:
        check_limits(spec, settings.max_question_chars, settings.max_context_docs, settings.max_context_chars)
        check_callback(spec, settings.callbacks.allowed_hosts)
    return spec


def prepare_jobs(jobs: Any, settings: Settings | None = None, derive_key: bool = False) -> list[JobSpec]:
    """Every job checked before any is enqueued; one InvalidJobError lists each bad one by position."""
    if isinstance(jobs, str | bytes | Mapping) or not isinstance(jobs, Iterable):
        raise InvalidJobError(f"expected a list of jobs (dicts with a question), got {kind_of(jobs)}")
    items = list(jobs)
    specs, problems = check_jobs(items, range(len(items)), settings, derive_key)
    if problems:
        raise batch_error([text for _, text in problems])
    return specs


def check_jobs(items: Sequence[Any], numbers: Sequence[int], settings: Settings | None = None,
               derive_key: bool = False, from_json: bool = False, noun: str = "job"
               ) -> tuple[list[JobSpec], list[tuple[int, str]]]:
    """The specs of the good jobs, and (number, "NOUN NUMBER: problem") for each bad one, in order.

    A batch that gives one idempotency key to two different jobs is refused too (key_conflicts).
    """
    specs: list[JobSpec] = []
    good: list[int] = []
    problems: list[tuple[int, str]] = []
    for item, number in zip(items, numbers, strict=True):
        try:
            specs.append(prepare_job(item, settings, derive_key, from_json))
            good.append(number)
        except InvalidJobError as exc:
            problems.append((number, f"{noun} {number}: {exc}"))
    for first, other in key_conflicts(specs):
        problems.append((good[other], f"{noun} {good[other]}: idempotency_key: also given to {noun} {good[first]} "
                                      "with a different question or context"))
    return specs, sorted(problems)


def batch_error(problems: Sequence[str], noun: str = "job", where: str = "") -> InvalidJobError:
    """One error for a refused batch: a single line for one problem, else a capped list."""
    if len(problems) == 1:
        return InvalidJobError(f"{where}1 bad {noun}, nothing was enqueued: {problems[0]}")
    listed = "".join(f"\n  {p}" for p in problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return InvalidJobError(f"{where}{len(problems)} bad {noun}s, nothing was enqueued:{listed}{more}")


class Client:
    """Submit question jobs, wait for answers, and manage dead letters, straight on the broker."""

    def __init__(self, settings: Settings | None = None, redis_client: redis.Redis | None = None, *,
                 redis_url: str | None = None, **options: Any) -> None:
        """Client(settings) uses those settings; Client(redis_url=...) needs nothing else: askq's
        defaults, plus any setting given as a keyword (queue="shop", max_question_chars=...),
        read from no environment and no `.env` (the host application's own). Client() reads
        askq's settings as every askq process does (ASKQ_* variables, `.env`)."""
        if settings is not None and (redis_url is not None or options):
            raise TypeError("give Client either settings or redis_url (and settings as keywords), not both")
        if settings is None:
            settings = (explicit_settings(redis_url=redis_url, **options) if redis_url is not None
                        else load_settings(**options))
        self.settings = settings
        self.redis = redis_client or connect(self.settings)
        self.store = JobStore(self.redis, self.settings)
        self.dlq = DeadLetterQueue(self.redis, self.settings)

    @classmethod
    def from_url(cls, redis_url: str, **options: Any) -> Client:
        """A client of the askq on this Redis (`redis://[:password@]host:port/db`), configured by
        nothing but the URL and any setting given as a keyword (queue="shop")."""
        return cls(redis_url=redis_url, **options)

    def spec(
        self,
        question: str,
        context: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        derive_key: bool = False,
        callback_url: str | None = None,
        expires_at: float | None = None,
        ttl_s: float | None = None,
    ) -> JobSpec:
        """Validate a job without submitting it (InvalidJobError names the bad field)."""
        return prepare_job(request_data(question, context, idempotency_key, metadata, callback_url, expires_at,
                                        ttl_s), self.settings, derive_key)

    def submit(
        self,
        question: str,
        context: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        derive_key: bool = False,
        callback_url: str | None = None,
        expires_at: float | None = None,
        ttl_s: float | None = None,
    ) -> str:
        """Enqueue one job and return its id; the same idempotency key always returns the same id.

        callback_url: POSTed the job's view, signed, once it is terminal (README: Completion callbacks).
        expires_at (epoch seconds) or ttl_s (seconds from now): a job not started by then is
        never run and ends expired.
        """
        spec = self.spec(question, context, idempotency_key, metadata, derive_key, callback_url, expires_at, ttl_s)
        self.store.submit(spec)
        return spec.id

    def submit_many(self, jobs: Iterable[dict[str, Any]], derive_key: bool = False) -> list[str]:
        """Enqueue many jobs (dicts with question, context, idempotency_key, metadata), pipelined.

        Every job is validated before any is enqueued, so one bad job enqueues nothing; the
        InvalidJobError lists each bad job by its position.
        """
        specs = prepare_jobs(jobs, self.settings, derive_key)
        self.store.submit_many(specs)
        return [s.id for s in specs]

    def get(self, job_id: str) -> JobView:
        return self.store.get(job_id)

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job: a queued or retrying one never calls a provider, a running one has its
        provider call stopped, and none stores a result. Cancelling twice says already_cancelled;
        a job that ended first says how (already_succeeded, ...). JobNotFoundError if none."""
        return self.store.cancel(job_id)

    def cancel_where(self, where: dict[str, Any]) -> dict[str, str]:
        """Cancel every job not yet ended whose metadata holds all of where's keys and values
        (values compared as JSON: "1" is not 1, true is not 1); job id -> outcome of each match."""
        return self.store.cancel_where(where)

    def wait(self, job_id: str, timeout: float = 60.0) -> JobView:
        """Block until the job is terminal (succeeded, dead, cancelled or expired); WaitTimeoutError
        after timeout seconds."""
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
