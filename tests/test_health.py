"""Health: the thresholds from the operators' checklist, and `askq health` exit codes under injected faults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from askq.config.settings import Settings
from askq.core.health import evaluate, grade
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_workers


@pytest.mark.parametrize(
    ("name", "value", "verdict"),
    [
        ("error_rate", 4.9, "healthy"), ("error_rate", 5.0, "warning"), ("error_rate", 10.0, "warning"),
        ("error_rate", 10.1, "critical"),
        ("retry_rate", 2.9, "healthy"), ("retry_rate", 4.0, "warning"), ("retry_rate", 5.1, "critical"),
        ("avg_latency", 1.9, "healthy"), ("avg_latency", 3.0, "warning"), ("avg_latency", 5.5, "critical"),
        ("success_rate", 96.0, "healthy"), ("success_rate", 95.0, "warning"), ("success_rate", 90.0, "warning"),
        ("success_rate", 89.9, "critical"),
    ],
)
def test_thresholds(name: str, value: float, verdict: str) -> None:
    assert grade(name, value).label == verdict


def test_rates_come_from_the_window() -> None:
    health = evaluate({"jobs": 100, "calls": 120, "faults": 20, "retries": 4, "succeeded": 97, "degraded": 1,
                       "dead": 3, "latency_sum_s": 97 * 1.5, "recovered": 10}, 300)
    rates = {c.name: c.value for c in health.checks}
    assert rates == {"error_rate": 3.0, "retry_rate": 3.33, "avg_latency": 1.5, "success_rate": 96.0,
                     "fault_rate": 16.67, "recovery_rate": 50.0, "cancelled": 0.0, "expired": 0.0}
    assert health.status == "warning"  # the retry rate
    assert health.exit_code == 1
    # Cancelled and expired jobs are counted apart: a producer taking work back moves no rate.
    window = {"jobs": 100, "succeeded": 100, "latency_sum_s": 100.0, "calls": 100, "cancelled": 400, "expired": 7}
    taken_back = evaluate(window, 300)
    assert taken_back.status == "healthy" and (taken_back.cancelled, taken_back.expired) == (400, 7)
    assert {c.name: c.value for c in taken_back.checks}["success_rate"] == 100.0
    assert evaluate({}, 300).status == "healthy"  # no traffic is not an alarm


def _health(stack: Stack) -> tuple[int, dict[str, object]]:
    out = subprocess.run([sys.executable, "-m", "askq", "health", "--json"], env=stack.env(),
                         capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout)


def _run(client: Client, questions: list[str]) -> None:
    for job_id in client.submit_many([{"question": q} for q in questions]):
        client.wait(job_id, timeout=60)


def test_askq_health_exit_codes_follow_the_injected_error_rate(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    stack.start_worker(concurrency=20)
    wait_workers(r, 1)
    client = Client(settings)

    _run(client, [f"How do I track order {i}?" for i in range(20)])
    code, report = _health(stack)
    assert (code, report["status"], report["jobs"]) == (0, "healthy", 20)

    # One job in 14 refused by every provider: 7 % errors, 93 % success -> warning.
    r.flushall()
    wait_workers(r, 1)
    _run(client, [f"Can I return item {i}?" for i in range(13)] + ["Refund me [[sim:bad_request]]"])
    code, report = _health(stack)
    assert (code, report["status"], report["jobs"]) == (1, "warning", 14)

    # A quarter of the jobs refused -> critical.
    r.flushall()
    wait_workers(r, 1)
    _run(client, [f"Is item {i} in stock?" for i in range(15)] + [f"Bad {i} [[sim:bad_request]]" for i in range(5)])
    code, report = _health(stack)
    assert (code, report["status"]) == (2, "critical")
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert checks["error_rate"]["value"] == 25.0
    assert checks["error_rate"]["status"] == "critical"
