"""Without tokens the API is open to loopback only: a page that rebinds its own host name to
127.0.0.1 must not use it from the operator's browser (read jobs, purge dead letters, submit).

The browser sends the attacker's name in `Host`; a real loopback caller sends `127.0.0.1`,
`localhost` or `[::1]`. Against a real `askq api` process on a real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from askq.config.settings import Settings
from askq.core import keys
from askq.producers.client import Client
from askq.stack import Stack
from tests.test_api import serve_api


@pytest.fixture
def open_api(stack: Stack) -> Iterator[str]:
    url, proc = serve_api(stack, tokens=())
    try:
        yield url
    finally:
        proc.kill()
        proc.wait(10)


def test_without_tokens_a_rebound_host_name_is_refused_and_loopback_names_work(
    open_api: str, settings: Settings, r: redis.Redis
) -> None:
    client = Client(settings)
    job_id = client.submit("What does my order cost?")
    pending = client.store.pending_count()
    port = open_api.rsplit(":", 1)[1]
    evil = {"Host": f"evil.example:{port}"}
    with httpx.Client(base_url=open_api, timeout=10) as http:
        for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", "/v1/dead-letters"),
                             ("DELETE", "/v1/dead-letters?reason=poison"), ("GET", "/metrics"),
                             ("GET", "/openapi.json"), ("GET", "/docs")):
            reply = http.request(method, path, headers=evil)
            assert reply.status_code == 403, (method, path, reply.status_code, reply.text)
            assert "loopback" in reply.json()["detail"]
        submitted = http.post("/v1/jobs", headers=evil, json={"question": "Planted by a web page"})
        assert submitted.status_code == 403
        assert client.store.pending_count() == pending and r.exists(keys.job(job_id))
        # Probes stay open (orchestrators reach them by any name); loopback names work as before.
        assert http.get("/healthz", headers=evil).status_code == 200
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert http.get(f"/v1/jobs/{job_id}", headers={"Host": host}).status_code == 200, host
            assert http.get("/openapi.json", headers={"Host": host}).status_code == 200, host
