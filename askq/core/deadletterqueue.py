"""The dead-letter queue: one record per dead job, listed, shown, replayed and purged by operators."""

from __future__ import annotations

import json
import uuid
from typing import Any, cast

import redis

from askq.broker import envelope
from askq.config.settings import Settings
from askq.core import clock, keys, scripts
from askq.core.deadletter import DeadLetter, DeadReason, make_record
from askq.core.job import check_limits, parse_spec, payload_text
from askq.errors import InvalidJobError, JobNotFoundError


class DeadLetterQueue:
    """Dead-letter records in Redis, trimmed by count and age."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._kill = scripts.register(client, "kill")
        self._replay = scripts.register(client, "replay")
        self._drop = scripts.register(client, "drop")
        self._redeliver = scripts.register(client, "redeliver")

    def kill(
        self,
        job_id: str | None,
        reason: DeadReason,
        error: str,
        payload: dict[str, Any] | None = None,
        raw: str | None = None,
        history: list[dict[str, Any]] | None = None,
        deliveries: int = 0,
        token: str = "",
        expect_state: str = "",
        expect_dispatch: int | None = None,
    ) -> str:
        """Dead-letter a job; returns ok, terminal, lease_lost or changed (see lua/kill.lua).

        The job must be held by `token`, or, without a token, still be in `expect_state` at
        `expect_dispatch` (when given). A job's record takes its delivery count from the job
        hash (`deliveries` only counts for records that are not a job's own). An invalid
        message is recorded under its own id and never touches a job it names, unless it is
        that job's own stored payload, refused by a worker's limits: then the job itself is
        dead-lettered.
        """
        now = clock.read(self.redis)
        record_id = job_id if job_id and reason is not DeadReason.INVALID_PAYLOAD else uuid.uuid4().hex
        guard = (token, expect_state, "" if expect_dispatch is None else str(expect_dispatch))
        if reason is DeadReason.INVALID_PAYLOAD and job_id and self._is_stored_payload(job_id, payload):
            # The job's own message is refused (e.g. workers enforce a smaller limit than the
            # producer did): the job itself is dead, or it would be re-sent and refused forever.
            record_id, guard = job_id, ("", "queued", guard[2])
        if record_id == job_id:
            deliveries = self._deliveries(job_id, deliveries)
        outcome = self._write(record_id, job_id, reason, error, payload, raw, history, deliveries, guard, now)
        self.trim()
        return outcome

    def _deliveries(self, job_id: str, given: int) -> int:
        """The job's own delivery count, so its record and its view agree whatever the caller passed.

        Read just before the guarded KILL: a requeue in between changes the lease or dispatch
        the guard checks, so a record that is written always carries the count it died with.
        """
        stored = self.redis.hget(keys.job(job_id), "delivery")
        try:
            return int(str(stored)) if stored is not None else given
        except ValueError:
            return given

    def _is_stored_payload(self, job_id: str, payload: dict[str, Any] | None) -> bool:
        if payload is None:
            return False
        try:
            text = payload_text(payload)
            stored = self.redis.hget(keys.job(job_id), "payload")
        except (TypeError, ValueError, RecursionError):
            # Not JSON, or an id Redis cannot encode (a lone surrogate): no producer stored that.
            return False
        return stored is not None and stored == text

    def _write(
        self,
        record_id: str,
        job_id: str | None,
        reason: DeadReason,
        error: str,
        payload: dict[str, Any] | None,
        raw: str | None,
        history: list[dict[str, Any]] | None,
        deliveries: int,
        guard: tuple[str, str, str],
        now: float,
    ) -> str:
        record, text = make_record(record_id, job_id, reason, error, payload, raw, history, deliveries, now)
        job_key = keys.job(record_id)
        result = self._kill(
            keys=[job_key, keys.LEASES, keys.PENDING, keys.DLQ_INDEX, keys.dead_letter(record_id), keys.STATS],
            args=[guard[0], text, reason.value, record.error, now,
                  self.settings.result_ttl_s, record_id, self.settings.dlq_max_age_s, guard[1], guard[2]],
        )
        return str(result)

    def trim(self, now: float | None = None) -> int:
        """Drop records beyond the configured count and age (index and record); returns how many."""
        cutoff = (now if now is not None else clock.read(self.redis)) - self.settings.dlq_max_age_s
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(keys.DLQ_INDEX, "-inf", cutoff)
        pipe.zcard(keys.DLQ_INDEX)
        expired, total = pipe.execute()
        old = cast(list[str], expired)
        excess = int(total) - len(old) - self.settings.dlq_max_records
        if excess > 0:
            old += cast(list[str], self.redis.zrange(keys.DLQ_INDEX, len(old), len(old) + excess - 1))
        self._drop_all(old)
        return len(old)

    def _drop_all(self, record_ids: list[str]) -> None:
        """Delete these records, each with its job while that is still dead (lua/drop.lua)."""
        for start in range(0, len(record_ids), 500):
            pipe = self.redis.pipeline(transaction=False)
            for record_id in record_ids[start : start + 500]:
                self._drop(keys=[keys.job(record_id), keys.dead_letter(record_id), keys.DLQ_INDEX,
                                 keys.callback(record_id)], args=[record_id], client=pipe)
            pipe.execute()

    def count(self) -> int:
        return int(self.redis.zcard(keys.DLQ_INDEX))

    def list(self, reason: DeadReason | None = None, since: float | None = None, limit: int = 100) -> list[DeadLetter]:
        ids = cast(
            list[str], self.redis.zrevrangebyscore(keys.DLQ_INDEX, "+inf", since if since is not None else "-inf")
        )
        found: list[DeadLetter] = []
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            for raw in self.redis.mget([keys.dead_letter(i) for i in chunk]):
                if raw is None:
                    continue
                record = DeadLetter.model_validate_json(raw)
                if reason is None or record.reason is reason:
                    found.append(record)
                    if len(found) >= limit:
                        return found
        return found

    def show(self, record_id: str) -> DeadLetter:
        raw = self.redis.get(keys.dead_letter(record_id))
        if raw is None:
            raise JobNotFoundError(f"no dead letter {record_id!r}")
        return DeadLetter.model_validate_json(raw)

    def server_time(self) -> float:
        """Now on Redis's clock, the one deaths are stamped with (a host's clock may be off)."""
        return clock.read(self.redis)

    def replay(self, record_id: str, asked_at: float | None = None, payload: dict[str, Any] | None = None) -> str:
        """Re-enqueue a dead job with its payload and id; returns ok, not_dead, newer, changed or no_payload.

        `asked_at` (Redis clock, default: now) is when the operator asked: a job that died again
        after it is not replayed again (`newer`), so N concurrent replays of one death run it once
        even when the job dies again at once. `payload` replaces the stored one (an operator's
        edit, checked by `edited`); it becomes the job's payload.
        """
        if asked_at is None:
            asked_at = self.server_time()
        try:
            record = self.show(record_id)
        except JobNotFoundError:
            # Replayed already (replay removes the record): the job (or callback) lives on, so
            # this is a no-op.
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(keys.job(record_id), "state")
            pipe.hget(keys.callback(record_id), "state")
            if any(state is not None and state != "dead" for state in pipe.execute()):
                return "not_dead"
            raise
        if record.reason is DeadReason.CALLBACK_FAILED:
            return self._redeliver_callback(record.id, asked_at)
        if record.payload is None or record.job_id is None or record.job_id != record.id:
            return "no_payload"
        record.payload = payload if payload is not None else record.payload
        dispatch, recorded = self.redis.hmget(keys.job(record.id), ["dispatch", "queue"])
        # Back to the queue it was submitted to (this client's own when none was recorded).
        queue = str(recorded or self.settings.queue)
        msg = envelope.build(queue, record.payload, dispatch=int(dispatch or 0) + 1)
        outcome = self._replay(
            keys=[keys.job(record.id), queue, keys.PENDING, keys.dead_letter(record.id), keys.DLQ_INDEX],
            args=[int(dispatch or 0), msg, clock.read(self.redis), record.id, payload_text(record.payload),
                  record.created or clock.read(self.redis), queue, asked_at],
        )
        return str(outcome)

    def _redeliver_callback(self, record_id: str, asked_at: float) -> str:
        """Deliver a failed callback again (same webhook-id and body); the job is not touched."""
        outcome = str(self._redeliver(
            keys=[keys.callback(record_id), keys.CALLBACKS_DUE, keys.dead_letter(record_id), keys.DLQ_INDEX],
            args=[record_id, clock.read(self.redis), asked_at]))
        # The event expired with its record, or was dropped: there is nothing left to deliver.
        return "no_payload" if outcome == "gone" else outcome

    def replay_many(self, reason: DeadReason | None = None, asked_at: float | None = None) -> dict[str, str]:
        """Replay every record (with this reason) once: jobs dying again meanwhile are not replayed again."""
        if asked_at is None:
            asked_at = self.server_time()
        return {r.id: self.replay(r.id, asked_at)
                for r in self.list(reason=reason, limit=self.settings.dlq_max_records)}

    def replay_seen(self, record_id: str, dead_at: float, asked_at: float,
                    payload: dict[str, Any] | None = None) -> str:
        """Replay the death an operator saw (its record's `dead_at`), never a later one.

        Returns replay's outcomes, or `changed` when the record is another death now and `gone`
        when there is no record any more. `asked_at` must be read before this is called: a job
        that dies again between this check and the replay is then refused by the script (`newer`).
        """
        try:
            record = self.show(record_id)
        except JobNotFoundError:
            return "gone"
        if record.dead_at != dead_at:
            return "changed"
        outcome = self.replay(record_id, asked_at, payload)
        return "gone" if outcome == "not_dead" else outcome

    def purge_seen(self, record_id: str, dead_at: float) -> str:
        """Purge a record only while it is the death an operator saw; returns ok, changed or gone.

        WATCHed, so a replay or a new death of the same job between the check and the drop makes
        it `changed` instead of dropping a record nobody looked at.
        """
        watched = [keys.dead_letter(record_id), keys.job(record_id), keys.callback(record_id)]
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*watched)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                raw = pipe.get(watched[0])
                if raw is None:
                    return "gone"
                if DeadLetter.model_validate_json(cast(str, raw)).dead_at != dead_at:
                    return "changed"
                pipe.multi()
                self._drop(keys=[watched[1], watched[0], keys.DLQ_INDEX, watched[2]], args=[record_id], client=pipe)
                pipe.execute()
            except redis.WatchError:
                return "changed"
        return "ok"

    def edited(self, record: DeadLetter, question: str) -> dict[str, Any]:
        """The record's payload with this question, checked as every way in checks a job.

        Raises InvalidJobError (naming the field and its problem) for a question a producer could
        not have submitted: blank, too long, not UTF-8, or a record with no runnable payload.
        """
        if record.payload is None or record.job_id != record.id or record.reason is DeadReason.CALLBACK_FAILED:
            raise InvalidJobError("this dead letter has no job payload to edit")
        spec = parse_spec({**record.payload, "question": question})
        check_limits(spec, self.settings.max_question_chars, self.settings.max_context_docs,
                     self.settings.max_context_chars)
        return cast(dict[str, Any], json.loads(spec.model_dump_json()))

    def purge(self, reason: DeadReason | None = None) -> int:
        records = self.list(reason=reason, limit=self.settings.dlq_max_records)
        self._drop_all([r.id for r in records])
        return len(records)
