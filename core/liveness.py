"""Worker liveness as operators see it: alive, stalled or dead, from heartbeats in Redis."""

from __future__ import annotations

import time
from typing import Literal, cast

import redis
from pydantic import BaseModel

from config.settings import Settings
from core import keys

WorkerState = Literal["alive", "stalled", "dead"]


class WorkerInfo(BaseModel):
    name: str
    state: WorkerState
    heartbeat_age_s: float
    inflight: int = 0
    completed: int = 0
    oldest_job_s: float = 0.0
    pid: int | None = None
    host: str | None = None


def classify(age_s: float, oldest_job_s: float, settings: Settings) -> WorkerState:
    """Dead: no heartbeat for three intervals. Stalled: beating, but a job is past its deadline."""
    if age_s > 3 * settings.heartbeat_s:
        return "dead"
    if oldest_job_s > settings.job_deadline_s:
        return "stalled"
    return "alive"


def list_workers(client: redis.Redis, settings: Settings) -> list[WorkerInfo]:
    now = time.time()
    entries = cast(list[tuple[str, float]], client.zrange(keys.WORKERS, 0, -1, withscores=True))
    pipe = client.pipeline(transaction=False)
    for name, _ in entries:
        pipe.hgetall(keys.worker(str(name)))
    infos = []
    for (name, beat), fields in zip(entries, pipe.execute(), strict=True):
        age = now - float(beat)
        oldest = float(fields.get("oldest_job_s", 0) or 0)
        infos.append(
            WorkerInfo(
                name=str(name),
                state=classify(age, oldest, settings),
                heartbeat_age_s=round(age, 3),
                inflight=int(fields.get("inflight", 0) or 0),
                completed=int(fields.get("completed", 0) or 0),
                oldest_job_s=oldest,
                pid=int(fields["pid"]) if fields.get("pid") else None,
                host=fields.get("host"),
            )
        )
    return infos
