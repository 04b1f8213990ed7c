"""Worker liveness as operators see it: alive, stalled or dead, from heartbeats in Redis."""

from __future__ import annotations

from typing import Literal, cast

import redis
from pydantic import BaseModel

from askq.config.settings import Settings
from askq.core import clock, keys

WorkerState = Literal["alive", "stalled", "dead"]


class WorkerInfo(BaseModel):
    """One worker as `askq workers` shows it."""

    name: str
    state: WorkerState
    heartbeat_age_s: float
    inflight: int = 0
    completed: int = 0
    oldest_job_s: float = 0.0
    pid: int | None = None
    host: str | None = None


def worker_state(age_s: float, oldest_job_s: float, heartbeat_s: float, job_deadline_s: float) -> WorkerState:
    """Dead: no heartbeat for three intervals. Stalled: beating, but a job is past its deadline."""
    if age_s > 3 * heartbeat_s:
        return "dead"
    if oldest_job_s > job_deadline_s:
        return "stalled"
    return "alive"


def _number(fields: dict[str, str], name: str, default: float) -> float:
    try:
        return float(fields[name])
    except (KeyError, ValueError):
        return default


def list_workers(client: redis.Redis, settings: Settings) -> list[WorkerInfo]:
    """Every worker that beat within worker_retention_s (dead ones too), judged by its own timings."""
    now = clock.read(client)
    # Workers silent past the retention are gone (the reaper removes them; hidden here meanwhile).
    entries = cast(list[tuple[str, float]],
                   client.zrangebyscore(keys.WORKERS, now - settings.worker_retention_s, "+inf", withscores=True))
    pipe = client.pipeline(transaction=False)
    for name, _ in entries:
        pipe.hgetall(keys.worker(str(name)))
    infos = []
    for (name, beat), fields in zip(entries, pipe.execute(), strict=True):
        age = now - float(beat)
        oldest = _number(fields, "oldest_job_s", 0.0)
        # A job's age keeps growing between beats; judge it as of now.
        if oldest > 0:
            oldest += age
        state = worker_state(age, oldest, _number(fields, "heartbeat_s", settings.heartbeat_s),
                         _number(fields, "job_deadline_s", settings.job_deadline_s))
        infos.append(
            WorkerInfo(
                name=str(name),
                state=state,
                heartbeat_age_s=round(age, 3),
                inflight=int(fields.get("inflight", 0) or 0),
                completed=int(fields.get("completed", 0) or 0),
                oldest_job_s=round(oldest, 3),
                pid=int(fields["pid"]) if fields.get("pid") else None,
                host=fields.get("host"),
            )
        )
    return infos
