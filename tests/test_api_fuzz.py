"""Property-based fuzzing of the HTTP API from its own OpenAPI schema, with every schemathesis check.

Schemathesis reads the schema the app serves (behind the token, like every route) and generates
valid and invalid requests for every operation; they go to the ASGI app in process, against the
real Redis, and each response is held to all of schemathesis's checks: no 5xx, status codes,
content types, headers and bodies as the schema declares them, invalid input refused, valid input
accepted, auth not ignored. Examples are few so it runs in seconds.
"""

from __future__ import annotations

from typing import Any

import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from askq.config.settings import ApiSettings, Settings
from askq.producers.api import create_app

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FUZZ = settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _all_checks(path: str) -> list[Any]:
    load_all_checks()
    checks = list(CHECKS.get_all())
    if path in ("/healthz", "/readyz"):
        # The probes answer 503 on purpose (critical verdict; no worker alive here), as their schema
        # declares: status_code_conformance still holds them to it, only the blanket no-5xx rule is off.
        checks = [c for c in checks if getattr(c, "__name__", "") != "not_a_server_error"]
    return checks


def _fuzz(operation: Any, mode: GenerationMode, failures: list[str]) -> None:
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(checks=_all_checks(case.path))
        except FailureGroup as exc:  # which checks failed, and a curl line to reproduce
            failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")

    try:
        call()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to make invalid (no parameters)


def test_every_check_passes_on_generated_requests(settings: Settings, r: redis.Redis) -> None:
    app = create_app(settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN], max_wait_s=0.2)}))
    with TestClient(app) as client:
        assert client.get("/openapi.json").status_code == 401  # the schema follows the token rule too
        raw = client.get("/openapi.json", headers=AUTH).json()
    # The token as schemathesis's auth for the bearer scheme: it then knows when a case drops it on purpose.
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}}})
    schema = schemathesis.openapi.from_dict(raw, config=config)
    schema.app = app
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, failures)
    assert failures == [], "\n\n".join(failures)
    # Whatever was generated, every job that got in is a valid one (the queue holds only good work):
    # no worker runs here, so each is still queued, or cancelled by a generated cancel request.
    for job_key in r.scan_iter("askq:job:*"):
        assert r.hget(job_key, "state") in ("queued", "cancelled")
