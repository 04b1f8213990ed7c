"""Counters of what the simulator saw, read by tests and benchmarks through `/_sim/stats`."""

import time
from collections import defaultdict
from typing import Any

# Arrival times are kept for rate checks; the cap bounds memory in long benchmarks.
MAX_ARRIVALS = 100_000


class Stats:
    """Request, outcome, concurrency and arrival-time counters since start or the last reset."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests: defaultdict[str, int] = defaultdict(int)
        self.responses: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)
        self.in_flight = 0
        self.max_in_flight = 0
        # Requests that arrived at the target of a `redirect` fault: a client followed it.
        self.redirects_followed = 0

    def reset(self) -> None:
        """Zero every counter and restart the clock that fault windows are measured on."""
        self.started = time.monotonic()
        self.requests.clear()
        self.responses.clear()
        self.arrivals.clear()
        self.redirects_followed = 0
        # In-flight is a gauge of requests still running, not a counter: zeroing
        # it would let those requests drive it negative when they finish.
        self.max_in_flight = self.in_flight

    def elapsed(self) -> float:
        """Return the seconds since start or the last reset."""
        return time.monotonic() - self.started

    def arrived(self, model: str) -> float:
        """Record a request for `model` entering the server; return its arrival time."""
        now = self.elapsed()
        self.requests[model] += 1
        times = self.arrivals[model]
        if len(times) < MAX_ARRIVALS:
            times.append(now)
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        return now

    def finished(self, model: str, outcome: str) -> None:
        """Record the outcome of a request for `model` (`ok` or the fault kind)."""
        self.responses[model][outcome] += 1
        self.in_flight -= 1

    def snapshot(self, with_arrivals: bool = True) -> dict[str, Any]:
        """Return the counters as JSON-ready data."""
        data: dict[str, Any] = {
            "uptime_s": self.elapsed(),
            "total_requests": sum(self.requests.values()),
            "requests": dict(self.requests),
            "responses": {m: dict(o) for m, o in self.responses.items()},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "redirects_followed": self.redirects_followed,
        }
        if with_arrivals:
            data["arrivals"] = {m: list(t) for m, t in self.arrivals.items()}
        return data
