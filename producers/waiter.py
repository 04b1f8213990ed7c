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

from core import keys
from core.errors import JobNotFoundError
from core.job import JobState, JobView
from core.store import JobStore

TERMINAL = {s.value for s in JobState if s.terminal}


@dataclass
class _Caller:
    deadline: float
    future: asyncio.Future[JobView] = field(repr=False)


class ResultWaiter:
    """Resolves each caller's future with the job's view once it is terminal or its wait is over."""

    def __init__(self, store: JobStore, interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self._waiting: dict[str, list[_Caller]] = {}
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
            self._loop, self._waiting, self._wake, self._task = loop, {}, asyncio.Event(), None
        caller = _Caller(self.clock() + wait_s, loop.create_future())
        self._waiting.setdefault(job_id, []).append(caller)
        self._wake.set()
        if self._task is None or self._task.done():
            # Started on the first wait (nothing runs at import); it ends when nobody waits.
            self._task = asyncio.create_task(self._run(), name="askq-result-waiter")
        try:
            return await caller.future
        finally:
            self._forget(job_id, caller)  # also when the caller went away (task cancelled)

    def _forget(self, job_id: str, caller: _Caller) -> None:
        callers = self._waiting.get(job_id)
        if callers and caller in callers:
            callers.remove(caller)
            if not callers:
                del self._waiting[job_id]

    async def _run(self) -> None:
        while self._waiting:
            self._wake.clear()
            try:
                # The snapshot is taken here, on the loop: the thread never reads the live table.
                snapshot = {job_id: live for job_id, callers in self._waiting.items()
                            if (live := [c for c in callers if not c.future.done()])}
                await asyncio.to_thread(self._tick, snapshot)
            except Exception as exc:  # Redis down: every current caller gets the error (a 503)
                self._fail_all(exc)
            now = self.clock()
            next_deadline = min((c.deadline for cs in self._waiting.values() for c in cs if not c.future.done()),
                                default=now + self.interval_s)
            pause = max(0.0, min(self.interval_s, next_deadline - now))
            try:
                # A new caller wakes the loop early, so a short wait is not held back by a tick.
                await asyncio.wait_for(self._wake.wait(), pause)
                await asyncio.sleep(0.005)  # gather a burst of arrivals into one tick
            except TimeoutError:
                pass

    def _tick(self, snapshot: dict[str, list[_Caller]]) -> None:
        """One poll (runs in a thread): states of all, full views of those done or out of time."""
        ids = list(snapshot)
        if not ids:
            return
        pipe = self.store.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        states = pipe.execute()
        now = self.clock()
        due = [job_id for job_id, state in zip(ids, states, strict=True)
               if state is None or state in TERMINAL or any(c.deadline <= now for c in snapshot[job_id])]
        if not due:
            return
        # The full view (payload, result) only for these: the costly part stays proportional to answers.
        views = self.store.get_many(due)
        loop_calls = []
        for job_id in due:
            view = views[job_id]
            for caller in snapshot[job_id]:
                if view is None or view.state.terminal or caller.deadline <= now:
                    loop_calls.append((caller.future, job_id, view))
        for future, job_id, view in loop_calls:
            future.get_loop().call_soon_threadsafe(_resolve, future, job_id, view)

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
