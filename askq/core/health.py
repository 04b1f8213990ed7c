"""The health verdict: recent job outcomes held against the operators' alert thresholds.

Rates come from the per-10-second health buckets every worker writes (askq/core/stats.py), summed
over a sliding window, so the verdict covers the whole cluster and forgets old trouble.

    error rate    dead jobs / finished jobs           < 5 % healthy, 5-10 % warning, > 10 % critical
    retry rate    retried calls / LLM calls           < 3 %,          3-5 %,          > 5 %
    avg latency   submission to result, answered jobs < 2 s,          2-5 s,          > 5 s
    success rate  answered by a provider / finished   > 95 %,         90-95 %,        < 90 %
    fault rate    failed calls / LLM calls            reported, no verdict of its own
    recovery rate faults whose job still got a provider answer / faults   reported
    cancelled     jobs cancelled in the window        reported (a producer's choice, not a fault)
    expired       jobs not started by expires_at      reported (a sign of backlog; no verdict)

Cancelled and expired jobs are not among the finished jobs the rates divide by: a producer
taking back work it no longer needs must not make askq look unhealthy.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, cast

import redis
from pydantic import BaseModel

from askq.core.stats import read_health_window

Verdict = Literal["healthy", "warning", "critical"]


class Level(IntEnum):
    """A verdict; its value is the exit code of `askq health`."""

    HEALTHY = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> Verdict:
        return cast(Verdict, self.name.lower())


class Check(BaseModel):
    """One measured rate and where it stands."""

    name: str
    value: float | None  # None: nothing to measure in the window
    unit: str
    status: Literal["healthy", "warning", "critical", "info"]
    thresholds: str


class Health(BaseModel):
    """The verdict over a window and the checks it came from."""

    status: Verdict
    window_s: float
    jobs: int
    calls: int
    cancelled: int = 0
    expired: int = 0
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        return int(Level[self.status.upper()])


# name -> (warning from, critical from, higher is worse)
THRESHOLDS: dict[str, tuple[float, float, bool]] = {
    "error_rate": (5.0, 10.0, True),
    "retry_rate": (3.0, 5.0, True),
    "avg_latency": (2.0, 5.0, True),
    "success_rate": (95.0, 90.0, False),
}


def grade(name: str, value: float) -> Level:
    """Where a value stands against its thresholds (boundaries count as the milder level)."""
    warn, crit, higher_is_worse = THRESHOLDS[name]
    if higher_is_worse:
        return Level.CRITICAL if value > crit else Level.WARNING if value >= warn else Level.HEALTHY
    return Level.CRITICAL if value < crit else Level.WARNING if value <= warn else Level.HEALTHY


def _pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 2) if whole > 0 else None


def evaluate(window: dict[str, float], window_s: float) -> Health:
    """The verdict for summed health-bucket fields (jobs, calls, faults, retries, succeeded, ...)."""
    jobs, calls, faults = window.get("jobs", 0.0), window.get("calls", 0.0), window.get("faults", 0.0)
    succeeded = window.get("succeeded", 0.0)
    answered_by_provider = succeeded - window.get("degraded", 0.0)
    measured = {
        "error_rate": (_pct(window.get("dead", 0.0), jobs), "%"),
        "retry_rate": (_pct(window.get("retries", 0.0), calls), "%"),
        "avg_latency": (round(window.get("latency_sum_s", 0.0) / succeeded, 3) if succeeded else None, "s"),
        "success_rate": (_pct(answered_by_provider, jobs), "%"),
    }
    checks: list[Check] = []
    worst = Level.HEALTHY
    for name, (value, unit) in measured.items():
        level = grade(name, value) if value is not None else Level.HEALTHY
        worst = max(worst, level)
        warn, crit, higher = THRESHOLDS[name]
        bounds = f"warning {'>=' if higher else '<='} {warn}{unit}, critical {'>' if higher else '<'} {crit}{unit}"
        checks.append(Check(name=name, value=value, unit=unit, status=level.label, thresholds=bounds))
    checks.append(Check(name="fault_rate", value=_pct(faults, calls), unit="%", status="info",
                        thresholds="failed LLM calls / LLM calls"))
    checks.append(Check(name="recovery_rate", value=_pct(window.get("recovered", 0.0), faults), unit="%",
                        status="info", thresholds="faulted jobs still answered by a provider / faults"))
    cancelled, expired = window.get("cancelled", 0.0), window.get("expired", 0.0)
    checks.append(Check(name="cancelled", value=cancelled, unit="jobs", status="info",
                        thresholds="jobs cancelled by producers in the window"))
    checks.append(Check(name="expired", value=expired, unit="jobs", status="info",
                        thresholds="jobs not started by their expires_at in the window"))
    return Health(status=worst.label, window_s=window_s, jobs=int(jobs), calls=int(calls), cancelled=int(cancelled),
                  expired=int(expired), checks=checks)


def check_health(client: redis.Redis, window_s: float) -> Health:
    """Read the window from Redis and evaluate it."""
    return evaluate(read_health_window(client, window_s), window_s)
