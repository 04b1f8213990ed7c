"""The reaper: brings back jobs whose worker died, fires due durable retries, caps poison.

Every worker process runs a reaper thread, but only the holder of a short Redis lock does the
work, so the duty survives the death of any one worker without two reapers racing.
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


class Reaper:
    """One sweep at a time: expired leases first, then due retries."""

    def __init__(self, client: redis.Redis, settings: Settings, holder: str | None = None) -> None:
        self.redis = client
        self.settings = settings
        self.holder = holder or uuid.uuid4().hex
        self.dlq = DeadLetterQueue(client, settings)
        self._lock = client.register_script(_LOCK)
        self._requeue = client.register_script(scripts.REQUEUE)

    def acquire(self) -> bool:
        ttl_ms = int(self.settings.reaper_interval_s * 3 * 1000)
        return bool(self._lock(keys=[keys.REAPER_LOCK], args=[self.holder, ttl_ms]))

    def sweep(self) -> dict[str, int]:
        """Reclaim expired leases and fire due retries; returns counts of what was done."""
        done = {"reclaimed": 0, "poisoned": 0, "retried": 0, "exhausted": 0}
        now = time.time()
        for job_id in self.redis.zrangebyscore(keys.LEASES, "-inf", now, start=0, num=BATCH):
            done[self._reclaim(str(job_id), now)] += 1
        for job_id in self.redis.zrangebyscore(keys.RETRIES, "-inf", now, start=0, num=BATCH):
            done[self._retry(str(job_id), now)] += 1
        done.pop("skipped", None)
        return done

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
            self.redis.zrem(keys.RETRIES, job_id)
            outcome = self.dlq.kill(
                job_id, DeadReason.EXHAUSTED, f"older than max_job_age_s; last error: {error or ''}",
                payload=json.loads(payload), deliveries=int(delivery or 1),
            )
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
