"""A reader polling the jobs' results as a user would, remembering the first answer each job showed.

At the end of the run each job's result is compared with the first one seen: any difference
(source, answer, finish time) is an answer that changed behind a reader's back.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import redis

from askq.core import keys


def fingerprint(result: str | None) -> tuple[str, str, float] | None:
    """(source, answer digest, finished) of a stored result; None when there is none yet."""
    if not result:
        return None
    try:
        res = json.loads(result)
        answer = hashlib.sha256(str(res.get("answer", "")).encode()).hexdigest()[:16]
        return str(res.get("source")), answer, float(res.get("finished") or 0.0)
    except (ValueError, TypeError, AttributeError):
        return ("unreadable", hashlib.sha256(result.encode()).hexdigest()[:16], 0.0)


@dataclass
class FirstResults:
    """The first result seen per job, polled at most every `interval_s`."""

    r: redis.Redis
    interval_s: float = 0.3
    first: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)
    _unseen: list[str] = field(default_factory=list)
    _last: float = 0.0

    def follow(self, ids: list[str]) -> None:
        self._unseen.extend(ids)

    def poll(self, force: bool = False) -> None:
        """Read the results of jobs not seen with one yet (Redis errors are left to the caller)."""
        if not self._unseen or (not force and time.monotonic() - self._last < self.interval_s):
            return
        self._last = time.monotonic()
        pipe = self.r.pipeline(transaction=False)
        for job_id in self._unseen:
            pipe.hget(keys.job(job_id), "result")
        now = time.time()
        still: list[str] = []
        for job_id, result in zip(self._unseen, pipe.execute(), strict=True):
            fp = fingerprint(result)
            if fp is None:
                still.append(job_id)
            else:
                self.first[job_id], self.seen_at[job_id] = fp, now
        self._unseen = still

    def replaced(self, results: dict[str, str | None]) -> list[str]:
        """Jobs whose result now differs from the first one seen."""
        return [j for j, fp in self.first.items() if fingerprint(results.get(j)) != fp]
