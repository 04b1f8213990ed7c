"""The producer client over the HTTP API: the same methods as `Client`, for a base URL and a token.

Use it where a service cannot reach Redis, or should not hold its password:

    client = HttpClient("https://askq.internal", token="...")
    job_id = client.submit("Where is my order?", idempotency_key="ticket-4711")
    view = client.wait(job_id, timeout=60)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import httpx
from pydantic import TypeAdapter

from askq.core.deadletter import DeadLetter, DeadReason
from askq.core.job import SUBMIT_FIELDS, CancelOutcome, JobSpec, JobView, parse_where, request_data
from askq.errors import AskqError, ConfigError, InvalidJobError, JobNotFoundError, WaitTimeoutError
from askq.producers.client import prepare_job, prepare_jobs

_DEAD_LETTERS = TypeAdapter(list[DeadLetter])


def _body(spec: JobSpec) -> dict[str, Any]:
    """What the API takes for a checked job: its request fields (the server gives the id)."""
    return spec.model_dump(include=set(SUBMIT_FIELDS), exclude_none=True)


class JobClient(Protocol):
    """What both clients offer, so a service can switch transport by configuration alone."""

    def submit(self, question: str, context: Sequence[str] | None = None, idempotency_key: str | None = None,
               metadata: dict[str, Any] | None = None, derive_key: bool = False,
               callback_url: str | None = None, expires_at: float | None = None,
               ttl_s: float | None = None) -> str: ...

    def submit_many(self, jobs: Iterable[dict[str, Any]], derive_key: bool = False) -> list[str]: ...

    def get(self, job_id: str) -> JobView: ...

    def wait(self, job_id: str, timeout: float = 60.0) -> JobView: ...

    def cancel(self, job_id: str) -> CancelOutcome: ...

    def cancel_where(self, where: dict[str, Any]) -> dict[str, str]: ...

    def dead_letters(self, reason: DeadReason | None = None, since: float | None = None,
                     limit: int = 100) -> list[DeadLetter]: ...

    def dead_letter(self, record_id: str) -> DeadLetter: ...

    def replay(self, record_id: str) -> str: ...

    def replay_all(self, reason: DeadReason | None = None) -> dict[str, str]: ...

    def purge_dead_letters(self, reason: DeadReason | None = None) -> int: ...

    def close(self) -> None: ...


class HttpClient:
    """Submit jobs, wait for answers and manage dead letters through askq's HTTP API."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # The read timeout leaves room for the longest long-poll this client asks for.
        self.poll_s = max(1.0, timeout_s - 5.0)
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, transport=transport,
                                 timeout=httpx.Timeout(timeout_s, connect=5.0))

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        reply = self.http.request(method, path, **kwargs)
        if reply.status_code == 422:
            raise InvalidJobError(reply.json().get("message", reply.text))
        if reply.status_code == 413:
            raise InvalidJobError(reply.json().get("detail", "request too large"))
        if reply.status_code == 404:
            raise JobNotFoundError(reply.json().get("detail", f"not found: {path}"))
        if reply.status_code in (401, 403):
            raise ConfigError(f"the askq API refused the token ({reply.status_code}); check the token you pass")
        if reply.status_code >= 400:
            raise AskqError(f"askq API {method} {path} answered {reply.status_code}: {reply.text[:200]}")
        return reply

    def submit(self, question: str, context: Sequence[str] | None = None, idempotency_key: str | None = None,
               metadata: dict[str, Any] | None = None, derive_key: bool = False,
               callback_url: str | None = None, expires_at: float | None = None,
               ttl_s: float | None = None) -> str:
        """Enqueue one job and return its id; the same idempotency key always returns the same id.

        The job is checked here first (as `Client` checks it), so a bad one never reaches the
        wire; the server checks it again, with its own limits (and callback allow-list).
        """
        spec = prepare_job(request_data(question, context, idempotency_key, metadata, callback_url, expires_at, ttl_s),
                           derive_key=derive_key)
        return str(self._call("POST", "/v1/jobs", json=_body(spec)).json()["id"])

    def submit_many(self, jobs: Iterable[dict[str, Any]], derive_key: bool = False) -> list[str]:
        """Enqueue many jobs in one request; all are checked here, and by the API, before any is enqueued."""
        specs = prepare_jobs(jobs, derive_key=derive_key)
        reply = self._call("POST", "/v1/jobs", json={"jobs": [_body(s) for s in specs]})
        return [str(j["id"]) for j in reply.json()["jobs"]]

    def get(self, job_id: str) -> JobView:
        return JobView.model_validate(self._call("GET", f"/v1/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job (DELETE /v1/jobs/{id}); the outcome as `Client.cancel` gives it."""
        return CancelOutcome(self._call("DELETE", f"/v1/jobs/{job_id}").json()["outcome"])

    def cancel_where(self, where: dict[str, Any]) -> dict[str, str]:
        """Cancel every unfinished job whose metadata matches (POST /v1/jobs/cancel); id -> outcome."""
        reply = self._call("POST", "/v1/jobs/cancel", json={"where": parse_where(where)})
        return {str(k): str(v) for k, v in reply.json()["outcomes"].items()}

    def wait(self, job_id: str, timeout: float = 60.0) -> JobView:
        """Long-poll until the job is terminal; WaitTimeoutError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            reply = self._call("GET", f"/v1/jobs/{job_id}/result", params={"wait": min(remaining, self.poll_s)})
            view = JobView.model_validate(reply.json())
            if view.state.terminal:
                return view
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(f"job {job_id} still {view.state} after {timeout}s")

    def dead_letters(self, reason: DeadReason | None = None, since: float | None = None,
                     limit: int = 100) -> list[DeadLetter]:
        params: dict[str, Any] = {"limit": limit}
        if reason is not None:
            params["reason"] = reason.value
        if since is not None:
            # The API takes "the last N seconds", the broker client an epoch time.
            params["since"] = max(0.0, time.time() - since)
        return _DEAD_LETTERS.validate_python(self._call("GET", "/v1/dead-letters", params=params).json())

    def dead_letter(self, record_id: str) -> DeadLetter:
        return DeadLetter.model_validate(self._call("GET", f"/v1/dead-letters/{record_id}").json())

    def replay(self, record_id: str) -> str:
        """Re-enqueue a dead job; replaying the same record twice runs it once."""
        return str(self._call("POST", f"/v1/dead-letters/{record_id}/replay").json()["outcome"])

    def replay_all(self, reason: DeadReason | None = None) -> dict[str, str]:
        params = {"reason": reason.value} if reason else {}
        reply = self._call("POST", "/v1/dead-letters/replay", params=params)
        return {str(item["id"]): str(item["outcome"]) for item in reply.json()}

    def purge_dead_letters(self, reason: DeadReason | None = None) -> int:
        params = {"reason": reason.value} if reason else {}
        return int(self._call("DELETE", "/v1/dead-letters", params=params).json()["purged"])

    def close(self) -> None:
        self.http.close()
