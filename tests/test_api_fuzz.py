"""Property-based fuzzing of the HTTP API from its own OpenAPI schema: no input makes it fail with a 5xx.

Schemathesis reads the schema the app serves and generates requests for every operation; they
go to the ASGI app in process, against the real Redis. Examples are few so it runs in seconds.
"""

from __future__ import annotations

from typing import Any

import redis
import schemathesis
from hypothesis import HealthCheck, given, settings

from config.settings import ApiSettings, Settings
from producers.api import create_app

TOKEN = "fuzz-token"
FUZZ = settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _fuzz(operation: Any, failures: list[str]) -> None:
    @FUZZ
    @given(case=operation.as_strategy())
    def call(case: schemathesis.Case) -> None:
        reply = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        # The probes answer 503 on purpose (no worker alive here); nothing else may.
        expected = reply.status_code == 503 and case.path in ("/readyz", "/healthz")
        if reply.status_code >= 500 and not expected:
            failures.append(f"{operation.label}: {reply.status_code} for {case.path_parameters} {case.query} "
                            f"{case.body!r}")

    call()


def test_no_generated_request_makes_the_api_fail(settings: Settings, r: redis.Redis) -> None:
    app = create_app(settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN], max_wait_s=0.2)}))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    for operation in operations:
        _fuzz(operation, failures)
    assert failures == []
    # Whatever was generated, every job that got in is a valid one (the queue holds only good work).
    for job_key in r.scan_iter("askq:job:*"):
        assert r.hget(job_key, "state") == "queued"
