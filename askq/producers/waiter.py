"""The API's long-poll waiter: one polling loop per process for every caller waiting on a result.

Each `GET /v1/jobs/{id}/result?wait=` used to poll Redis on its own through the threadpool; at
2,000 callers that queued thousands of thread hops a second, so callers returned seconds late
and the probes (which run in the same threadpool) waited behind them. Here a caller registers a
future and sleeps on the event loop; one task reads the state of every waited-on job in one
pipeline per tick (one thread hop), and fetches the full view only of those that finished or
whose wait ran out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from askq.core import keys
from askq.core.job import JobState, JobView
from askq.core.store import JobStore
from askq.errors import JobNotFoundError

TERMINAL = {s.value for s in JobState if s.terminal}


@dataclass
class _Caller:
    deadline: float
    future: asyncio.Future[JobView] = field(repr=False)


class ResultWaiter:
    """Resolves each caller's future with the job's view once it is terminal or its wait is over."""

    # Futures resolved per event-loop turn: each resumes a request that writes its response, so
    # 2,000 at once would hold the loop (and the probes) for a few hundred milliseconds.
    RESOLVE_CHUNK = 100
    SLACK_S = 10.0

    def __init__(self, store: JobStore, interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self._waiting: dict[str, list[_Caller]] = {}
        self._fresh: set[str] = set()  # ids registered since the last poll: checked at once
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        return sum(len(c) for c in self._waiting.values())

    async def wait(self, job_id: str, wait_s: float) -> JobView:
        """The job's view once terminal, or its latest view after wait_s; JobNotFoundError if none."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Served from another loop (an app restarted in the same process): start afresh there.
            self._loop, self._waiting, self._fresh, self._wake, self._task = loop, {}, set(), asyncio.Event(), None
        caller = _Caller(self.clock() + wait_s, loop.create_future())
        self._waiting.setdefault(job_id, []).append(caller)
        self._fresh.add(job_id)
        self._wake.set()
        if self._task is None or self._task.done():
            # Started on the first wait (nothing runs at import); it ends when nobody waits.
            self._task = asyncio.create_task(self._run(), name="askq-result-waiter")
        try:
            # The poller answers by the deadline; the slack only matters if it died, and then the
            # caller reads the job itself rather than hang.
            return await asyncio.wait_for(caller.future, wait_s + self.SLACK_S)
        except TimeoutError:
            return await asyncio.to_thread(self.store.get, job_id)
        finally:
            self._forget(job_id, caller)  # also when the caller went away (task cancelled)

    def _forget(self, job_id: str, caller: _Caller) -> None:
        callers = self._waiting.get(job_id)
        if callers and caller in callers:
            callers.remove(caller)
            if not callers:
                del self._waiting[job_id]

    async def _run(self) -> None:
        last_full = -float("inf")
        while self._waiting:
            self._wake.clear()
            now = self.clock()
            live = {job_id: alive for job_id, callers in self._waiting.items()
                    if (alive := [c for c in callers if not c.future.done()])}
            # Every waited-on job each interval, or when a wait runs out; between, only new arrivals
            # (so a burst of callers costs one small poll each, not repeated polls of everyone).
            full = now - last_full >= self.interval_s or any(c.deadline <= now for cs in live.values() for c in cs)
            ids = set(live) if full else self._fresh & set(live)
            self._fresh.clear()
            if full:
                last_full = now
            try:
                # The snapshot is taken here, on the loop: the thread never reads the live table.
                ready = await asyncio.to_thread(self._poll, {i: live[i] for i in ids})
            except Exception as exc:  # Redis down: every current caller gets the error (a 503)
                self._fail_all(exc)
                ready = []
            for start in range(0, len(ready), self.RESOLVE_CHUNK):
                for future, job_id, view in ready[start:start + self.RESOLVE_CHUNK]:
                    _resolve(future, job_id, view)
                await asyncio.sleep(0)  # let the resumed requests and the probes have the loop
            now = self.clock()
            next_deadline = min((c.deadline for cs in self._waiting.values() for c in cs if not c.future.done()),
                                default=now + self.interval_s)
            pause = max(0.0, min(last_full + self.interval_s, next_deadline) - now)
            try:
                # A new caller wakes the loop early, so a job already finished is answered at once.
                await asyncio.wait_for(self._wake.wait(), pause)
                await asyncio.sleep(0.005)  # gather a burst of arrivals into one poll
            except TimeoutError:
                pass

    def _poll(self, snapshot: dict[str, list[_Caller]]) -> list[tuple[asyncio.Future[JobView], str, JobView | None]]:
        """One poll (runs in a thread): states of all, full views of those done or out of time."""
        ids = list(snapshot)
        if not ids:
            return []
        pipe = self.store.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        states = pipe.execute()
        now = self.clock()
        due = [job_id for job_id, state in zip(ids, states, strict=True)
               if state is None or state in TERMINAL or any(c.deadline <= now for c in snapshot[job_id])]
        if not due:
            return []
        # The full view (payload, result) only for these: the costly part stays proportional to answers.
        views = self.store.get_many(due)
        ready = []
        for job_id in due:
            view = views[job_id]
            finished = view is None or view.state.terminal
            ready += [(c.future, job_id, view) for c in snapshot[job_id] if finished or c.deadline <= now]
        return ready

    def _fail_all(self, exc: Exception) -> None:
        for callers in self._waiting.values():
            for caller in callers:
                if not caller.future.done():
                    caller.future.set_exception(exc)


def _resolve(future: asyncio.Future[JobView], job_id: str, view: JobView | None) -> None:
    if future.done():  # the caller went away meanwhile
        return
    if view is None:
        future.set_exception(JobNotFoundError(f"no job {job_id!r}"))
    else:
        future.set_result(view)
