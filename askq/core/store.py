"""The job store: create jobs and their first message, read and wait for them (synchronous)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis

from askq.broker import envelope
from askq.config.settings import Settings
from askq.core import clock, keys, scripts, stats
from askq.core.deadletter import DeadReason
from askq.core.job import (
    CancelOutcome,
    JobSpec,
    JobState,
    JobView,
    Result,
    check_limits,
    metadata_matches,
    parse_where,
    payload_text,
)
from askq.core.webhook import check_callback
from askq.errors import DurabilityError, JobNotFoundError, WaitTimeoutError

# Jobs read per round trip by a bulk cancel: it walks the pending index (jobs not yet ended)
# only, a batch at a time, so Redis is never held by one long command.
CANCEL_SCAN_BATCH = 200


class JobStore:
    """Producer-side access to jobs in Redis; every write is one atomic script call."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._submit = scripts.register(client, "submit")
        self._cancel = scripts.register(client, "cancel")

    def _submit_args(self, spec: JobSpec) -> tuple[list[str], list[Any]]:
        check_limits(
            spec, self.settings.max_question_chars, self.settings.max_context_docs, self.settings.max_context_chars
        )
        check_callback(spec, self.settings.callbacks.allowed_hosts)
        # The job's birth on Redis's clock: its age (max_job_age_s) is judged on other hosts.
        now = clock.read(self.redis)
        payload = spec.model_dump(mode="json") | {"created": now}
        text = payload_text(payload)
        msg = envelope.build(self.settings.queue, payload, dispatch=1, job_text=text)
        job_keys = [keys.job(spec.id), keys.PENDING, self.settings.queue, keys.STATS, keys.EXPIRIES]
        expiry = ["" if v is None else repr(v) for v in (spec.expires_at, spec.ttl_s)]
        return job_keys, [text, msg, now, spec.id, self.settings.queue, *expiry]

    def submit(self, spec: JobSpec) -> bool:
        """Store and enqueue a job; False if a job with this id (idempotency key) already exists.

        With durability strict, only once it is on disk (and on the replicas asked for), else
        DurabilityError (see durable).
        """
        if self.settings.durability == "strict":
            return self.submit_many([spec])[0]
        job_keys, args = self._submit_args(spec)
        return bool(self._submit(keys=job_keys, args=args))

    def submit_many(self, specs: Sequence[JobSpec], chunk: int = 500) -> list[bool]:
        """Store and enqueue many jobs, pipelining the writes; one bool per job as in submit().

        Every job is checked against the limits before the first is written, so a bad job
        anywhere in the list enqueues nothing.
        """
        prepared = [self._submit_args(spec) for spec in specs]
        strict = self.settings.durability == "strict"
        created: list[bool] = []
        for start in range(0, len(prepared), chunk):
            pipe = self.redis.pipeline(transaction=False)
            for job_keys, args in prepared[start : start + chunk]:
                self._submit(keys=job_keys, args=args, client=pipe)
            if not strict:
                created.extend(bool(r) for r in pipe.execute())
                continue
            # On the same connection as the writes: WAITAOF and WAIT wait for this client's own
            # writes. The primary's AOF is fsynced; replicas have received them (WAIT): their own
            # disks follow their appendfsync (WAITAOF on replicas would wait for their once-a-second
            # fsync report, a second per submit).
            timeout_ms = int(self.settings.durability_timeout_s * 1000)
            need = self.settings.durability_replicas
            pipe.execute_command("WAITAOF", 1, 0, timeout_ms)  # type: ignore[no-untyped-call]
            if need:
                pipe.execute_command("WAIT", need, timeout_ms)  # type: ignore[no-untyped-call]
            waits = 2 if need else 1
            chunk_specs = specs[start : start + chunk]
            try:
                replies = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise self._not_durable(chunk_specs, f"the connection failed: {exc}") from exc
            for reply in replies[:-waits]:
                if isinstance(reply, Exception):
                    raise reply
            self.durable(replies[-waits:], chunk_specs)
            created.extend(bool(r) for r in replies[:-waits])
        return created

    def durable(self, acks: list[Any], specs: Sequence[JobSpec]) -> None:
        """Check the replies of WAITAOF 1 0 ([fsynced locally, _]) and WAIT (replicas that have
        the writes, when asked for); DurabilityError if short."""
        need = self.settings.durability_replicas
        for ack in acks:
            if isinstance(ack, Exception):
                raise self._not_durable(specs, f"the server cannot confirm it: {ack}") from ack
        local = int(acks[0][0])
        replicas = int(acks[1]) if need else 0
        if local < 1 or replicas < need:
            raise self._not_durable(specs, f"on disk on the primary: {'yes' if local else 'no'}; replicas that "
                                           f"have it: {replicas} of {need}")

    def _not_durable(self, specs: Sequence[JobSpec], why: str) -> DurabilityError:
        keyless = sum(1 for s in specs if s.idempotency_key is None)
        retry = ("submit again with the same idempotency key to get the same job"
                 + (f" ({keyless} of them have none: a retry would create new jobs)" if keyless else ""))
        ids = tuple(s.id for s in specs)
        return DurabilityError(
            f"{len(specs)} job(s) accepted by Redis but not confirmed durable within "
            f"{self.settings.durability_timeout_s:g} s ({why}). They may be in: {retry}.", ids)

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job that has not ended (lua/cancel.lua); JobNotFoundError if there is none."""
        args = self._cancel_args(job_id)  # first: it reads Redis's clock, which the health bucket key is on
        outcome = str(self._cancel(keys=cancel_keys(job_id), args=args))
        if outcome == "missing":
            raise JobNotFoundError(f"no job {job_id!r}")
        return CancelOutcome(outcome)

    def _cancel_args(self, job_id: str) -> list[Any]:
        return [job_id, clock.read(self.redis), self.settings.result_ttl_s, stats.HEALTH_TTL_S, keys.CANCELS]

    def cancel_where(self, where: dict[str, Any], batch: int = CANCEL_SCAN_BATCH) -> dict[str, str]:
        """Cancel every job not yet ended whose metadata has all of where's keys and values.

        Walks the pending index (queued, running and retrying jobs; never the finished ones) in
        batches: one round trip reads a batch's payloads, one cancels its matches. Returns
        job id -> outcome for the jobs that matched (already_<state> when one ended meanwhile).
        """
        where = parse_where(where)
        outcomes: dict[str, str] = {}
        cursor = 0
        while True:
            cursor, found = cast(tuple[int, list[tuple[str, float]]],
                                 self.redis.zscan(keys.PENDING, cursor, count=batch))
            ids = [str(job_id) for job_id, _ in found if job_id not in outcomes]
            if ids:
                pipe = self.redis.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hget(keys.job(job_id), "payload")
                matched = [job_id for job_id, payload in zip(ids, pipe.execute(), strict=True)
                           if payload is not None and metadata_matches(_metadata_of(payload), where)]
                if matched:
                    pipe = self.redis.pipeline(transaction=False)
                    clock.read(self.redis)  # the health bucket key is on Redis's clock
                    for job_id in matched:
                        self._cancel(keys=cancel_keys(job_id), args=self._cancel_args(job_id), client=pipe)
                    outcomes |= {job_id: str(o) for job_id, o in zip(matched, pipe.execute(), strict=True)
                                 if o != "missing"}
            if cursor == 0:
                return outcomes

    def get(self, job_id: str) -> JobView:
        fields = self.redis.hgetall(keys.job(job_id))
        if not fields:
            raise JobNotFoundError(f"no job {job_id!r}")
        return view_from_hash(job_id, cast(dict[str, str], fields))

    def get_many(self, job_ids: Iterable[str]) -> dict[str, JobView | None]:
        ids = list(job_ids)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
        return {
            job_id: view_from_hash(job_id, fields) if fields else None
            for job_id, fields in zip(ids, pipe.execute(), strict=True)
        }

    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.05) -> JobView:
        """Block until the job is terminal; WaitTimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        delay = poll_s
        while True:
            view = self.get(job_id)
            if view.state.terminal:
                return view
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(f"job {job_id} still {view.state} after {timeout_s}s")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 1.0)

    def pending_count(self) -> int:
        return int(self.redis.zcard(keys.PENDING))


def cancel_keys(job_id: str) -> list[str]:
    """The KEYS of lua/cancel.lua for a job."""
    return [keys.job(job_id), keys.PENDING, keys.LEASES, keys.RETRIES, keys.PROBATION, keys.EXPIRIES, keys.STATS,
            keys.health_bucket(stats.health_bucket())]


def _metadata_of(payload: str) -> dict[str, Any]:
    try:
        found = json.loads(payload).get("metadata")
    except (ValueError, AttributeError, RecursionError):
        return {}
    return found if isinstance(found, dict) else {}


def view_from_hash(job_id: str, fields: dict[str, str]) -> JobView:
    """Turn a job hash into the reader's view."""
    payload = json.loads(fields.get("payload") or "{}")
    result = Result.model_validate_json(fields["result"]) if fields.get("result") else None
    reason = fields.get("reason") or None
    return JobView(
        id=job_id,
        state=JobState(fields.get("state", "queued")),
        question=str(payload.get("question", "")),
        created=float(fields.get("created") or payload.get("created") or 0),
        updated=float(fields["updated"]) if fields.get("updated") else None,
        delivery=int(fields.get("delivery") or 0),
        # A dead job has no result: its calls are counted from its dead letter's history (KILL).
        attempts=result.attempts if result else int(fields.get("attempts") or 0),
        result=result,
        reason=DeadReason(reason) if reason else None,
        error=fields.get("error") or None,
        expires_at=float(fields["expires_at"]) if fields.get("expires_at") else None,
    )
