"""The reaper: brings back jobs whose worker died, fires due durable retries, caps poison.

Every worker process runs a reaper thread, but only the holder of a short Redis lock does the
work, so the duty survives the death of any one worker. Every action is a script that checks
the state and dispatch number the reaper read, so even two reapers (a lock that expired during
a slow sweep) cannot requeue or kill a job twice, nor kill a fresh claim.

Three sweeps: expired leases (a job running on a dead or frozen worker), due durable retries,
and messages kombu still holds as unacked long after delivery whose job was never claimed
(reserved by a worker that died before starting them). Kombu itself would only restore those
after its visibility timeout, an hour by default.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import cast

import redis
import structlog

from config.settings import Settings
from core import keys, message, scripts
from core.deadletter import DeadLetterQueue
from core.job import DeadReason

log = structlog.get_logger("askq.reaper")

# KEYS: lock   ARGV: holder, ttl_ms — take the lock, or extend it if we already hold it.
_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

BATCH = 200
# The lost-message sweep reads the whole queue list, so it runs only this often and only while
# the list is short; a backlog drains first, and a lost message is found once it has.
ORPHAN_EVERY_S = 10.0
ORPHAN_QUEUE_MAX = 1000
# Unacked entries looked at per sweep: those of long-running jobs stay there, so the window is
# wide enough that they cannot hide abandoned ones behind them.
UNACKED_BATCH = 2000


class Reaper:
    """One sweep at a time: expired leases first, then due retries."""

    def __init__(self, client: redis.Redis, settings: Settings, holder: str | None = None) -> None:
        self.redis = client
        self.settings = settings
        self.holder = holder or uuid.uuid4().hex
        self.dlq = DeadLetterQueue(client, settings)
        self._lock = client.register_script(_LOCK)
        self._requeue = client.register_script(scripts.REQUEUE)
        self._recover = client.register_script(scripts.RECOVER)
        self._orphans_due = 0.0
        # delivery tag -> (job id, dispatch) of unacked entries already read (None: not ours).
        self._located: dict[str, tuple[str, int] | None] = {}

    def acquire(self) -> bool:
        ttl_ms = int(self.settings.reaper_interval_s * 3 * 1000)
        return bool(self._lock(keys=[keys.REAPER_LOCK], args=[self.holder, ttl_ms]))

    def sweep(self) -> dict[str, int]:
        """Reclaim expired leases and fire due retries; returns counts of what was done."""
        done = {"reclaimed": 0, "poisoned": 0, "retried": 0, "exhausted": 0, "restored": 0, "dropped": 0,
                "skipped": 0}
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(keys.LEASES, "-inf", now, start=0, num=BATCH)
        pipe.zrangebyscore(keys.RETRIES, "-inf", now, start=0, num=BATCH)
        # A live worker claims a reserved message within milliseconds (prefetch never exceeds
        # its free threads), so one still unclaimed after a lease period has been abandoned.
        pipe.zrangebyscore(keys.KOMBU_UNACKED_INDEX, "-inf", now - self.settings.lease_s, start=0,
                           num=UNACKED_BATCH)
        expired, due, abandoned = pipe.execute()
        for job_id in expired:
            done[self._reclaim(str(job_id), now)] += 1
        for job_id in due:
            done[self._retry(str(job_id), now)] += 1
        for tag, job_id, dispatch in self._abandoned(cast(list[str], abandoned)):
            done[self._recover_unacked(tag, job_id, dispatch, now)] += 1
        if now >= self._orphans_due:
            self._orphans_due = now + ORPHAN_EVERY_S
            done["resent"] = self.resend_lost(now)
        done.pop("skipped")
        return done

    def resend_lost(self, now: float) -> int:
        """Re-enqueue queued jobs whose message is nowhere: not on the queue, not held unacked.

        Kombu's BRPOP removes a message before the consumer records it as unacked, so a worker
        killed in between (or a connection cut by a Redis restart) loses it. Such a job stays
        `queued` forever without this. A message merely in transit is re-sent needlessly at
        worst, and its late copy is then skipped as stale.
        """
        if int(self.redis.llen(self.settings.queue)) > ORPHAN_QUEUE_MAX:
            return 0
        pending = cast(list[str], self.redis.zrangebyscore(keys.PENDING, "-inf", now - 2 * self.settings.lease_s))
        if not pending:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for job_id in pending:
            pipe.hmget(keys.job(job_id), ["state", "dispatch", "updated", "delivery"])
        candidates = [
            (job_id, fields) for job_id, fields in zip(pending, pipe.execute(), strict=True)
            if fields[0] == "queued" and float(fields[2] or 0) < now - 2 * self.settings.lease_s
        ]
        if not candidates:
            return 0
        seen: set[tuple[str, int]] = set()
        for raw in cast(list[str], self.redis.lrange(self.settings.queue, 0, -1)):
            found = message.locate_envelope(_loads(raw))
            if found:
                seen.add(found)
        for raw in cast(list[str], self.redis.hvals(keys.KOMBU_UNACKED)):
            found = message.locate(raw)
            if found:
                seen.add(found)
        resent = 0
        for job_id, (_, dispatch, _, delivery) in candidates:
            if (job_id, int(dispatch or 1)) in seen:
                continue
            payload = self.redis.hget(keys.job(job_id), "payload")
            if payload is None:
                continue
            if self._push(job_id, "queued", int(dispatch or 1), int(delivery or 1), str(payload), now,
                          "resent") == "resent":
                log.warning("lost_message_resent", job_id=job_id, dispatch=dispatch)
                resent += 1
        return resent

    def _reclaim(self, job_id: str, now: float) -> str:
        state, payload, dispatch, delivery = cast(
            list[str | None], self.redis.hmget(keys.job(job_id), ["state", "payload", "dispatch", "delivery"])
        )
        if state != "running" or payload is None:
            self.redis.zrem(keys.LEASES, job_id)
            return "skipped"
        deliveries = int(delivery or 1)
        if deliveries >= self.settings.max_deliveries:
            outcome = self.dlq.kill(
                job_id, DeadReason.POISON,
                f"worker lost {deliveries} times while running this job (lease expired)",
                payload=json.loads(payload), deliveries=deliveries,
                expect_state="running", expect_dispatch=int(dispatch or 1),
            )
            log.warning("job_poisoned", job_id=job_id, deliveries=deliveries, outcome=outcome)
            return "poisoned" if outcome == "ok" else "skipped"
        return self._push(job_id, "running", int(dispatch or 1), deliveries + 1, payload, now, "reclaimed")

    def _retry(self, job_id: str, now: float) -> str:
        state, payload, dispatch, delivery, created, error = cast(
            list[str | None],
            self.redis.hmget(keys.job(job_id), ["state", "payload", "dispatch", "delivery", "created", "error"]),
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
        return self._push(job_id, "retrying", int(dispatch or 1), int(delivery or 1), payload, now, "retried")

    def _push(self, job_id: str, state: str, dispatch: int, delivery: int, payload: str, now: float,
              done: str) -> str:
        msg = message.build(self.settings.queue, json.loads(payload), dispatch=dispatch + 1)
        outcome = self._requeue(
            keys=[keys.job(job_id), keys.LEASES, self.settings.queue, keys.RETRIES],
            args=[dispatch, msg, now, job_id, delivery, state],
        )
        if outcome == "ok":
            log.info("job_requeued", job_id=job_id, why=done, delivery=delivery)
            return done
        return "skipped"


    def _abandoned(self, tags: list[str]) -> list[tuple[str, str, int]]:
        """Unacked entries worth settling: not ours-and-running. Each entry is read only once."""
        unknown = [t for t in tags if t not in self._located]
        if unknown:
            for tag, raw in zip(unknown, self.redis.hmget(keys.KOMBU_UNACKED, unknown), strict=True):
                if raw is None:  # acked meanwhile
                    self.redis.zrem(keys.KOMBU_UNACKED_INDEX, tag)
                # Not ours (None): kombu's own restore after visibility_timeout deals with it.
                self._located[tag] = message.locate(str(raw)) if raw is not None else None
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
        payload = self.redis.hget(keys.job(job_id), "payload")
        msg = message.build(self.settings.queue, json.loads(str(payload)), dispatch=dispatch + 1) if payload else ""
        outcome = str(self._recover(
            keys=[keys.job(job_id), self.settings.queue, keys.KOMBU_UNACKED, keys.KOMBU_UNACKED_INDEX],
            args=[tag, dispatch, msg, now],
        ))
        if outcome in ("restored", "dropped"):
            self._located.pop(tag, None)
            log.info("unacked_settled", job_id=job_id, dispatch=dispatch, outcome=outcome)
            return outcome
        return "skipped"


def _loads(raw: str) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # anyone can push anything onto the queue (issue 9 A)
        return None


def run_in_thread(client: redis.Redis, settings: Settings, holder: str, stop: threading.Event) -> threading.Thread:
    """Start the reaper loop in a daemon thread of this worker process."""

    def loop() -> None:
        reaper = Reaper(client, settings, holder)
        while not stop.is_set():
            try:
                if reaper.acquire():
                    done = reaper.sweep()
                    if any(done.values()):
                        log.info("reaper_sweep", **done)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("reaper_redis_unavailable", error=str(exc))
            except Exception:  # keep the duty alive whatever one sweep hit
                log.exception("reaper_sweep_failed")
            stop.wait(settings.reaper_interval_s)

    thread = threading.Thread(target=loop, name="askq-reaper", daemon=True)
    thread.start()
    return thread
