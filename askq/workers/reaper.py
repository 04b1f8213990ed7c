"""The reaper: brings back jobs whose worker died, fires due durable retries, caps poison.

Every worker process runs a reaper thread, but only the holder of a short Redis lock does the
work, so the duty survives the death of any one worker. Every action is a script that checks
the state and dispatch number the reaper read, so even two reapers (a lock that expired during
a slow sweep) cannot requeue or kill a job twice, nor kill a fresh claim.

Four sweeps: expired leases (a job running on a dead or frozen worker), due durable retries,
jobs past their expires_at (queued or retrying ones end `expired`, even while every worker is
busy or the queue holds a backlog), and messages kombu still holds as unacked long after
delivery whose job was never claimed (reserved by a worker that died before starting them).
Kombu itself would only restore those after its visibility timeout, an hour by default. A
submission from another service (a plain Celery send_task) held that long goes back on its
queue too, unless its job exists (askq/core/lua/restore_submission.lua).

One reaper serves every queue on the Redis (the lock is shared): each job goes back to the
queue it was submitted to (recorded in its hash), never to the reaper's own.

Poison and bystanders. A worker process runs many jobs, so when it dies every job it ran loses
a delivery, the culprit and its bystanders alike. Each reclaim records, per lost delivery, the
worker and the jobs that were running alongside. At the delivery cap a job is poison only if it
is the common factor of its losses: it died alone once, or no other job was there every time.
A job that always died alongside the same other job(s) cannot be told from them yet: it is
parked, and the parked jobs are let out one at a time, each after the previous one ended, so
each runs apart from the others; a job lost again while let out is poison, the others finish.
Parked jobs whose companion in every death has since been found poison are cleared: all let
out at once.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any, cast

import redis
import structlog

from askq.broker import envelope, unacked
from askq.config.settings import Settings
from askq.core import clock, keys, scripts
from askq.core.deadletter import DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import job_id_for
from askq.workers.transitions import expire_args, expire_keys

log = structlog.get_logger("askq.reaper")

BATCH = 200
# The lost-message sweep reads the whole queue list, so it runs only this often and only while
# the list is short; a backlog drains first, and a lost message is found once it has.
ORPHAN_EVERY_S = 10.0
ORPHAN_QUEUE_MAX = 1000
# Unacked entries looked at per sweep: those of long-running jobs stay there, so the window is
# wide enough that they cannot hide abandoned ones behind them.
UNACKED_BATCH = 2000
# Job ids a lost delivery names as running alongside, at most: enough to tell the culprit.
MAX_ALONGSIDE = 50


def is_culprit(losses: list[dict[str, Any]]) -> bool:
    """Whether a job is the common factor of its lost deliveries (the poison rule, see above).

    True when it died alone at least once, or when no other job was running alongside every
    time; False when the same other job(s) shared every one of its deaths.
    """
    alongside = [set(loss.get("running_with") or []) for loss in losses]
    return not alongside or not set.intersection(*alongside)


def _losses(raw: str | None) -> list[dict[str, Any]]:
    try:
        found = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [x for x in found if isinstance(x, dict)] if isinstance(found, list) else []


class Reaper:
    """One sweep at a time: expired leases first, then due retries."""

    def __init__(self, client: redis.Redis, settings: Settings, holder: str | None = None) -> None:
        self.redis = client
        self.settings = settings
        self.holder = holder or uuid.uuid4().hex
        self.dlq = DeadLetterQueue(client, settings)
        self._lock = scripts.register(client, "reaper_lock")
        self._requeue = scripts.register(client, "requeue")
        self._recover = scripts.register(client, "recover")
        self._restore_submission = scripts.register(client, "restore_submission")
        self._park = scripts.register(client, "park")
        self._release = scripts.register(client, "release")
        self._expire = scripts.register(client, "expire")
        self._orphans_due = 0.0
        # Per sweep: worker name -> ids of its running jobs whose leases end soon (a dead worker's).
        self._running: dict[str, set[str]] | None = None
        # Worker name -> (last time, ids) of jobs reclaimed from it lately: lost in the same death.
        self._lost_from: dict[str, tuple[float, set[str]]] = {}
        # delivery tag -> (job id, dispatch) of unacked entries already read (None: not ours).
        self._located: dict[str, tuple[str, int] | None] = {}

    def acquire(self) -> bool:
        ttl_ms = int(self.settings.reaper_interval_s * 3 * 1000)
        return bool(self._lock(keys=[keys.REAPER_LOCK], args=[self.holder, ttl_ms]))

    def sweep(self) -> dict[str, int]:
        """Reclaim expired leases and fire due retries; returns counts of what was done."""
        done = {"reclaimed": 0, "poisoned": 0, "parked": 0, "retried": 0, "exhausted": 0, "restored": 0,
                "dropped": 0, "skipped": 0, "expired": 0}
        now = clock.read(self.redis)
        self._running = None
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(keys.LEASES, "-inf", now, start=0, num=BATCH)
        pipe.zrangebyscore(keys.RETRIES, "-inf", now, start=0, num=BATCH)
        # A live worker claims a reserved message within milliseconds (prefetch never exceeds
        # its free threads), so one still unclaimed after a lease period has been abandoned.
        unacked.queue_stale(pipe, now - self.settings.lease_s, UNACKED_BATCH)
        pipe.zrangebyscore(keys.EXPIRIES, "-inf", now, start=0, num=BATCH)
        expired, due, abandoned, past = pipe.execute()
        for job_id in past:
            if self._expire(keys=expire_keys(str(job_id)), args=expire_args(str(job_id), self.settings)) == "expired":
                log.info("job_expired", job_id=job_id, by="reaper")
                done["expired"] += 1
        for job_id in expired:
            done[self._reclaim(str(job_id), now)] += 1
        released = self._release_parked(now)
        due = [*due, *released]
        done["released"] = len(released)
        for job_id in due:
            done[self._retry(str(job_id), now)] += 1
        for tag, job_id, dispatch in self._abandoned(cast(list[str], abandoned)):
            done[self._recover_unacked(tag, job_id, dispatch, now)] += 1
        if now >= self._orphans_due:
            self._orphans_due = now + ORPHAN_EVERY_S
            done["resent"] = self.resend_lost(now)
        done["forgotten"] = self.forget_dead_workers(now)
        done.pop("skipped")
        return done

    def forget_dead_workers(self, now: float) -> int:
        """Remove workers silent for longer than worker_retention_s from the workers list."""
        cutoff = now - self.settings.worker_retention_s
        gone = cast(list[str], self.redis.zrangebyscore(keys.WORKERS, "-inf", cutoff))
        if not gone:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        # By score, so a worker that beat meanwhile (it was only frozen) stays listed; its details
        # hash is written again with its next beat.
        pipe.zremrangebyscore(keys.WORKERS, "-inf", cutoff)
        pipe.delete(*[keys.worker(name) for name in gone])
        pipe.execute()
        log.info("dead_workers_forgotten", count=len(gone))
        return len(gone)

    def queue_of(self, recorded: str | None) -> str:
        """The queue a job goes back to: the one it was submitted to (this reaper's own for jobs
        submitted before askq recorded it)."""
        return recorded or self.settings.queue

    def resend_lost(self, now: float) -> int:
        """Re-enqueue queued jobs whose message is nowhere: not on its queue, not held unacked.

        Kombu's BRPOP removes a message before the consumer records it as unacked, so a worker
        killed in between (or a connection cut by a Redis restart) loses it. Such a job stays
        `queued` forever without this. A message merely in transit is re-sent needlessly at
        worst, and its late copy is then skipped as stale. Each job is looked for on the queue
        it was submitted to, and re-sent there.
        """
        pending = cast(list[str], self.redis.zrangebyscore(keys.PENDING, "-inf", now - 2 * self.settings.lease_s))
        if not pending:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for job_id in pending:
            pipe.hmget(keys.job(job_id), ["state", "dispatch", "updated", "delivery", "queue"])
        candidates = [
            (job_id, fields) for job_id, fields in zip(pending, pipe.execute(), strict=True)
            if fields[0] == "queued" and float(fields[2] or 0) < now - 2 * self.settings.lease_s
        ]
        if not candidates:
            return 0
        queues = {self.queue_of(fields[4]) for _, fields in candidates}
        pipe = self.redis.pipeline(transaction=False)
        for queue in sorted(queues):
            pipe.llen(queue)
        # A long queue is a backlog, not a loss: its jobs are looked at once it has drained.
        short = {q for q, depth in zip(sorted(queues), pipe.execute(), strict=True) if int(depth) <= ORPHAN_QUEUE_MAX}
        candidates = [(job_id, fields) for job_id, fields in candidates if self.queue_of(fields[4]) in short]
        if not candidates:
            return 0
        seen: set[tuple[str, int]] = set()
        for queue in sorted(short):
            for raw in cast(list[str], self.redis.lrange(queue, 0, -1)):
                found = envelope.locate_envelope(_loads(raw))
                if found:
                    seen.add(found)
        seen |= unacked.held_jobs(self.redis)
        resent = 0
        for job_id, (_, dispatch, _, delivery, queue) in candidates:
            if (job_id, int(dispatch or 1)) in seen:
                continue
            payload = self.redis.hget(keys.job(job_id), "payload")
            if payload is None:
                continue
            if self._push(job_id, "queued", int(dispatch or 1), int(delivery or 1), str(payload), now,
                          "resent", self.queue_of(queue)) == "resent":
                log.warning("lost_message_resent", job_id=job_id, dispatch=dispatch, queue=self.queue_of(queue))
                resent += 1
        return resent

    def _reclaim(self, job_id: str, now: float) -> str:
        state, payload, dispatch, delivery, queue, worker, recorded, probation = cast(
            list[str | None],
            self.redis.hmget(keys.job(job_id), ["state", "payload", "dispatch", "delivery", "queue", "worker",
                                                "losses", "probation"]),
        )
        if state != "running" or payload is None:
            self.redis.zrem(keys.LEASES, job_id)
            return "skipped"
        deliveries = int(delivery or 1)
        alongside = self._alongside(job_id, worker or "", now)
        losses = [*_losses(recorded), {"outcome": "lost", "delivery": deliveries, "worker": worker or "",
                                       "at": round(now, 3), "running_with": alongside}]
        if deliveries < self.settings.max_deliveries:
            done = self._push(job_id, "running", int(dispatch or 1), deliveries + 1, payload, now, "reclaimed",
                              self.queue_of(queue), json.dumps(losses))
        elif probation == "released" or is_culprit(losses):
            why = ("lost again while running apart from the jobs it always died with" if probation == "released"
                   else "alone, or each time with different jobs: the common factor")
            outcome = self.dlq.kill(
                job_id, DeadReason.POISON,
                f"worker lost {deliveries} times while running this job (lease expired); {why}",
                payload=json.loads(payload), history=losses, deliveries=deliveries,
                expect_state="running", expect_dispatch=int(dispatch or 1),
            )
            log.warning("job_poisoned", job_id=job_id, deliveries=deliveries, outcome=outcome)
            done = "poisoned" if outcome == "ok" else "skipped"
        else:
            done = self._park_job(job_id, int(dispatch or 1), deliveries, losses, now)
        if done != "skipped" and worker:
            self._lost_from[worker] = (now, self._lost_from.get(worker, (now, set()))[1] | {job_id})
        return done

    def _alongside(self, job_id: str, worker: str, now: float) -> list[str]:
        """The jobs that ran in the same worker process as job_id when it was lost.

        A dead worker's leases all end within one heartbeat of each other (they are renewed
        together), so its other jobs are those with a lease ending by then, plus those already
        reclaimed from it lately.
        """
        if self._running is None:
            ids = cast(list[str], self.redis.zrangebyscore(keys.LEASES, "-inf", now + self.settings.heartbeat_s,
                                                           start=0, num=UNACKED_BATCH))
            pipe = self.redis.pipeline(transaction=False)
            for other in ids:
                pipe.hmget(keys.job(other), ["state", "worker"])
            self._running = {}
            for other, (state, owner) in zip(ids, pipe.execute(), strict=True):
                if state == "running" and owner:
                    self._running.setdefault(str(owner), set()).add(str(other))
            horizon = now - 2 * self.settings.lease_s
            self._lost_from = {w: entry for w, entry in self._lost_from.items() if entry[0] >= horizon}
        others = self._running.get(worker, set()) | self._lost_from.get(worker, (now, set()))[1]
        return sorted(others - {job_id})[:MAX_ALONGSIDE]

    def _park_job(self, job_id: str, dispatch: int, deliveries: int, losses: list[dict[str, Any]], now: float) -> str:
        common = sorted(set.intersection(*[set(loss.get("running_with") or []) for loss in losses]))
        outcome = self._park(
            keys=[keys.job(job_id), keys.LEASES, keys.PROBATION],
            args=[dispatch, now, job_id, deliveries + 1, json.dumps(losses),
                  f"worker lost {deliveries} times, each time alongside {', '.join(common[:5])}: "
                  "parked to run apart from them"],
        )
        if outcome == "ok":
            log.warning("job_parked", job_id=job_id, deliveries=deliveries, alongside=common[:5])
            return "parked"
        return "skipped"

    def _release_parked(self, now: float) -> list[str]:
        """Let parked jobs out: every one cleared by a poisoned companion, and the next one to run
        apart once the one let out before has ended. Returns their ids."""
        parked = cast(list[str], self.redis.zrange(keys.PROBATION, 0, BATCH - 1))
        if not parked:
            return []
        released = [job_id for job_id in self._cleared(parked) if self._let_out(job_id, now, apart=False)]
        current = cast(str | None, self.redis.get(keys.PROBATION_RUNNING))
        if current is not None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(keys.job(current), "state")
            pipe.zscore(keys.PROBATION, current)
            state, waiting = pipe.execute()
            if state in ("queued", "running", "retrying") and waiting is None:
                return released  # still on its way: the others wait
            self.redis.delete(keys.PROBATION_RUNNING)
        for job_id in parked:
            if job_id not in released and self._let_out(job_id, now, apart=True):
                return [*released, job_id]
        return released

    def _let_out(self, job_id: str, now: float, apart: bool) -> bool:
        outcome = self._release(keys=[keys.PROBATION, keys.PROBATION_RUNNING, keys.RETRIES, keys.job(job_id)],
                                args=[job_id, now, "1" if apart else "0"])
        if outcome == "ok":
            log.info("job_released", job_id=job_id, apart=apart)
        return bool(outcome == "ok")

    def _cleared(self, parked: list[str]) -> list[str]:
        """Parked jobs one of whose companions in every death is now dead as poison."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in parked:
            pipe.hget(keys.job(job_id), "losses")
        common = {job_id: set.intersection(*[set(x.get("running_with") or []) for x in losses])
                  for job_id, raw in zip(parked, pipe.execute(), strict=True) if (losses := _losses(raw))}
        suspects = sorted(set().union(*common.values())) if common else []
        if not suspects:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for other in suspects:
            pipe.hmget(keys.job(other), ["state", "reason"])
        poisoned = {other for other, (state, reason) in zip(suspects, pipe.execute(), strict=True)
                    if state == "dead" and reason == DeadReason.POISON.value}
        return [job_id for job_id, companions in common.items() if companions & poisoned]

    def _retry(self, job_id: str, now: float) -> str:
        state, payload, dispatch, delivery, created, error, queue = cast(
            list[str | None],
            self.redis.hmget(keys.job(job_id),
                             ["state", "payload", "dispatch", "delivery", "created", "error", "queue"]),
        )
        if state != "retrying" or payload is None:
            self.redis.zrem(keys.RETRIES, job_id)
            return "skipped"
        if now - float(created or now) > self.settings.max_job_age_s:
            outcome = self.dlq.kill(
                job_id, DeadReason.EXHAUSTED, f"older than max_job_age_s; last error: {error or ''}",
                payload=json.loads(payload), deliveries=int(delivery or 1),
                expect_state="retrying", expect_dispatch=int(dispatch or 1),
            )
            self.redis.zrem(keys.RETRIES, job_id)
            return "exhausted" if outcome == "ok" else "skipped"
        return self._push(job_id, "retrying", int(dispatch or 1), int(delivery or 1), payload, now, "retried",
                          self.queue_of(queue))

    def _push(self, job_id: str, state: str, dispatch: int, delivery: int, payload: str, now: float,
              done: str, queue: str, losses: str = "") -> str:
        msg = envelope.build(queue, json.loads(payload), dispatch=dispatch + 1)
        outcome = self._requeue(
            keys=[keys.job(job_id), keys.LEASES, queue, keys.RETRIES],
            args=[dispatch, msg, now, job_id, delivery, state, losses],
        )
        if outcome == "ok":
            log.info("job_requeued", job_id=job_id, why=done, delivery=delivery)
            return done
        return "skipped"


    def _abandoned(self, tags: list[str]) -> list[tuple[str, str, int]]:
        """Unacked entries worth settling: not ours-and-running. Each entry is read only once."""
        unknown = [t for t in tags if t not in self._located]
        if unknown:
            for tag, raw in zip(unknown, unacked.held(self.redis, unknown), strict=True):
                if raw is None:  # acked meanwhile
                    unacked.forget(self.redis, tag)
                # Not ours (None): kombu's own restore after visibility_timeout deals with it.
                # Dispatch 0: a submission from another service, whose job it creates itself.
                self._located[tag] = (envelope.locate(raw) or _submission(raw)) if raw is not None else None
        self._located = {t: self._located[t] for t in tags if t in self._located}
        ours = [(t, loc) for t in tags if (loc := self._located.get(t)) is not None]
        if not ours:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for _, (job_id, _) in ours:
            pipe.hmget(keys.job(job_id), ["state", "dispatch"])
        found = []
        for (tag, (job_id, dispatch)), (state, current) in zip(ours, pipe.execute(), strict=True):
            # Running at this dispatch: the lease covers it. Anything else is settled now.
            if not (state == "running" and int(current or 0) == dispatch):
                found.append((tag, job_id, dispatch))
        return found

    def _recover_unacked(self, tag: str, job_id: str, dispatch: int, now: float) -> str:
        """Restore (or drop, if stale) one message a worker reserved long ago and never claimed."""
        if dispatch == 0:
            return self._settle_submission(tag)
        payload, recorded = cast(list[str | None], self.redis.hmget(keys.job(job_id), ["payload", "queue"]))
        queue = self.queue_of(recorded)
        msg = envelope.build(queue, json.loads(str(payload)), dispatch=dispatch + 1) if payload else ""
        outcome = str(self._recover(
            keys=unacked.settle_keys(keys.job(job_id), queue),
            args=[tag, dispatch, msg, now],
        ))
        if outcome in ("restored", "dropped"):
            self._located.pop(tag, None)
            log.info("unacked_settled", job_id=job_id, dispatch=dispatch, outcome=outcome)
            return outcome
        return "skipped"


    def _settle_submission(self, tag: str) -> str:
        found = unacked.held_submission(self.redis, tag)
        self._located.pop(tag, None)
        if found is None:
            unacked.forget(self.redis, tag)
            return "skipped"
        job_id = _submission_job(found)
        outcome = str(self._restore_submission(
            keys=unacked.settle_keys(keys.job(job_id), found.queue), args=[tag, found.envelope]))
        log.info("unacked_settled", job_id=job_id, dispatch=0, outcome=outcome, queue=found.queue)
        return outcome if outcome in ("restored", "dropped") else "skipped"


def _submission(raw: str) -> tuple[str, int] | None:
    found = envelope.locate_submission(raw)
    return (_submission_job(found), 0) if found else None


def _submission_job(found: envelope.HeldSubmission) -> str:
    """The job id the worker gives a submission's job (askq/core/message.py submitted_spec)."""
    return job_id_for(found.idempotency_key) if found.idempotency_key else found.task_id


def _loads(raw: str) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # anyone can push anything onto the queue (issue 9 A)
        return None


# Backoff of the reaper loop after a failed sweep: first, and cap (seconds).
FAILED_SWEEP_BACKOFF_S = (0.5, 30.0)


def run_in_thread(
    client: redis.Redis, settings: Settings, holder: str, stop: threading.Event,
    before_sweep: Callable[[], object] | None = None,
) -> threading.Thread:
    """Start the reaper loop in a daemon thread of this worker process.

    before_sweep runs before each try for the lock (the worker renews its own leases there, so
    its reaper never reclaims a run of its own process that is still going, e.g. on the first
    sweep after Redis or the process itself was frozen). If it fails, the sweep is skipped and
    the lock not taken, so a process that cannot renew its own leases leaves the duty to
    others. A failed sweep is logged and the loop backs off; anything that escapes the loop
    itself is logged and the loop started again, so the duty never dies silently.
    """

    def sweep_once(reaper: Reaper) -> None:
        if before_sweep is not None:
            before_sweep()
        if reaper.acquire():
            done = reaper.sweep()
            if any(done.values()):
                log.info("reaper_sweep", **done)

    def loop() -> None:
        reaper = Reaper(client, settings, holder)
        failures = 0
        while not stop.is_set():
            try:
                sweep_once(reaper)
                failures = 0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failures += 1
                log.warning("reaper_redis_unavailable", error=str(exc))
            except redis.ResponseError as exc:  # OOM, READONLY after a failover, ...
                failures += 1
                log.warning("reaper_redis_error", error=str(exc))
            except Exception:  # keep the duty alive whatever one sweep hit
                failures += 1
                log.exception("reaper_sweep_failed")
            backoff = min(FAILED_SWEEP_BACKOFF_S[0] * 2 ** max(0, failures - 1), FAILED_SWEEP_BACKOFF_S[1])
            stop.wait(max(settings.reaper_interval_s, backoff) if failures else settings.reaper_interval_s)

    def supervised() -> None:
        delay = FAILED_SWEEP_BACKOFF_S[0]
        while not stop.is_set():
            try:
                loop()
            except Exception:  # the thread must not end while the worker lives
                log.exception("duty_failed", duty="reaper", restart_in_s=delay)
                stop.wait(delay)
                delay = min(delay * 2, FAILED_SWEEP_BACKOFF_S[1])
                if not stop.is_set():
                    log.warning("duty_restarted", duty="reaper")

    thread = threading.Thread(target=supervised, name="askq-reaper", daemon=True)
    thread.start()
    return thread
