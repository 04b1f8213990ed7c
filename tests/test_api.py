"""The HTTP API contract: auth, 422 shapes, size limits, batch idempotency, long-poll, dead letters."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from askq.config.settings import ApiSettings, Settings
from askq.core.job import JobState
from askq.core.redisserver import free_port
from askq.errors import ConfigError, InvalidJobError
from askq.producers.api import check_exposure, create_app
from askq.producers.client import Client
from askq.producers.httpclient import HttpClient, JobClient
from askq.sim.answers import answer_for
from askq.stack import Stack
from tests.conftest import wait_for, wait_workers

TOKEN = "test-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    api = ApiSettings(tokens=[TOKEN], max_batch=5, max_body_bytes=20_000)
    return settings.model_copy(update={"api": api})


@pytest.fixture
def api(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings), headers=AUTH) as client:
        yield client


def nothing_enqueued(r: redis.Redis, settings: Settings) -> bool:
    return r.llen(settings.queue) == 0 and r.zcard("askq:pending") == 0


def test_every_job_route_refuses_a_missing_or_wrong_token(api_settings: Settings, r: redis.Redis) -> None:
    anonymous = TestClient(create_app(api_settings))
    for method, path in [("POST", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("GET", "/v1/jobs/x/result"),
                         ("GET", "/v1/dead-letters"), ("DELETE", "/v1/dead-letters"), ("GET", "/metrics"),
                         ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            reply = anonymous.request(method, path, headers=headers, json={"question": "hi"})
            assert reply.status_code == 401, (method, path, headers)
            assert reply.headers["www-authenticate"] == "Bearer"
    assert nothing_enqueued(r, api_settings)
    # Orchestrator probes need no token.
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 503  # no worker yet


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"question": ""}, "question", "at least 1 character"),
        ({}, "question", "Field required"),
        ({"question": "hi", "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"question": "hi", "context": "not a list"}, "context", "valid list"),
        ({"question": "x" * 8001}, "question", "limit is 8000"),
        ({"question": "hi", "context": ["a"] * 21}, "context", "limit is 20"),
        ({"jobs": [{"question": "ok"}, {"question": ""}]}, "jobs.1.question", "at least 1 character"),
        ({"jobs": [{"question": "ok"}, {"question": "x" * 8001}]}, "jobs.1.question", "limit is 8000"),
        ({"jobs": [{"question": "q"}] * 6}, "jobs", "6 jobs, limit is 5"),
        ({"jobs": []}, "jobs", "at least 1 item"),
        ([1, 2], "body", "valid dictionary"),
    ],
)
def test_bad_input_gets_422_naming_the_field_and_enqueues_nothing(
    api: TestClient, r: redis.Redis, api_settings: Settings, body: Any, field: str, problem: str
) -> None:
    reply = api.post("/v1/jobs", json=body)
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert any(d["field"] == field and problem in d["problem"] for d in detail), detail
    assert field in reply.json()["message"]
    assert nothing_enqueued(r, api_settings)


def test_invalid_json_and_oversized_bodies_are_refused(api: TestClient, r: redis.Redis,
                                                       api_settings: Settings) -> None:
    reply = api.post("/v1/jobs", content=b'{"question": ', headers={"Content-Type": "application/json"})
    assert reply.status_code == 422
    assert "not valid JSON" in reply.json()["message"]
    reply = api.post("/v1/jobs", json={"question": "y" * 25_000})
    assert reply.status_code == 413
    assert "limit" in reply.json()["detail"]
    reply = api.get("/v1/jobs/x/result", params={"wait": 10_000})
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["field"] == "wait"
    assert nothing_enqueued(r, api_settings)


def test_batch_honours_idempotency_keys(api: TestClient, r: redis.Redis, api_settings: Settings) -> None:
    batch = {"jobs": [{"question": "Where is order 1?", "idempotency_key": "order-1"},
                      {"question": "Where is order 2?", "idempotency_key": "order-2"},
                      {"question": "Where is order 1?", "idempotency_key": "order-1"},
                      {"question": "No key"}]}
    first = api.post("/v1/jobs", json=batch)
    assert first.status_code == 202
    jobs = first.json()["jobs"]
    assert [j["created"] for j in jobs] == [True, True, False, True]
    assert jobs[0]["id"] == jobs[2]["id"]
    again = api.post("/v1/jobs", json=batch).json()["jobs"]
    assert [j["id"] for j in again[:3]] == [j["id"] for j in jobs[:3]]
    assert [j["created"] for j in again] == [False, False, False, True]
    # Keyed jobs were enqueued once each; the two unkeyed submissions are two jobs.
    assert r.llen(api_settings.queue) == 4
    single = api.post("/v1/jobs", json={"question": "Where is order 2?", "idempotency_key": "order-2"})
    assert single.status_code == 200
    assert single.json() == {"id": jobs[1]["id"], "created": False}


def test_long_poll_returns_when_the_job_finishes(api: TestClient, stack: Stack, r: redis.Redis) -> None:
    job_id = api.post("/v1/jobs", json={"question": "How do I reset my password?"}).json()["id"]
    early = api.get(f"/v1/jobs/{job_id}/result", params={"wait": 0.3})
    assert early.status_code == 202
    assert early.json()["state"] == "queued"
    stack.start_worker(concurrency=5)
    reply = api.get(f"/v1/jobs/{job_id}/result", params={"wait": 60})
    assert reply.status_code == 200
    view = reply.json()
    assert view["state"] == "succeeded"
    assert view["result"]["answer"] == answer_for("How do I reset my password?", "primary")
    assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "succeeded"
    assert api.get("/v1/jobs/nope").status_code == 404
    wait_workers(r, 1)
    ready = api.get("/readyz").json()
    assert ready["ready"] is True and ready["workers_alive"] >= 1


def test_no_tokens_means_loopback_only(stack: Stack) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    check_exposure(settings, "127.0.0.1")
    check_exposure(settings, "::1")
    with pytest.raises(ConfigError, match="without tokens"):
        check_exposure(settings, "0.0.0.0")
    out = subprocess.run([sys.executable, "-m", "askq", "api", "--host", "0.0.0.0", "--port", str(free_port())],
                         env=stack.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "without tokens" in out.stderr


def serve_api(stack: Stack, tokens: tuple[str, ...] = (TOKEN,), **env: str) -> tuple[str, subprocess.Popen[bytes]]:
    """`askq api` as a real uvicorn process on a free port, once it answers /healthz."""
    port = free_port()
    proc = stack.spawn(f"api{port}", [sys.executable, "-m", "askq", "api"],
                       stack.env(ASKQ_API__TOKENS=json.dumps(list(tokens)), ASKQ_API__PORT=str(port), **env))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, what="askq api to answer")
    except BaseException:
        proc.kill()
        raise
    return url, proc


@pytest.fixture
def api_server(stack: Stack) -> Iterator[str]:
    url, proc = serve_api(stack)
    yield url
    proc.terminate()
    proc.wait(15)


def _round_trip(client: JobClient) -> None:
    """What a service does with either client: submit, wait, and handle a dead letter."""
    job_id = client.submit("Can I change my delivery address?", idempotency_key="addr-1")
    assert client.submit("Can I change my delivery address?", idempotency_key="addr-1") == job_id
    ids = client.submit_many([{"question": "Do you ship abroad?"}, {"question": "Is there a warranty?"}])
    for one in [job_id, *ids]:
        assert client.wait(one, timeout=60).state is JobState.SUCCEEDED
    with pytest.raises(InvalidJobError, match="question"):
        client.submit("")
    dead_id = client.submit("Please answer [[sim:bad_request]]")
    assert client.wait(dead_id, timeout=60).state is JobState.DEAD
    records = client.dead_letters()
    assert [d.id for d in records] == [dead_id]
    assert client.dead_letter(dead_id).reason.value == "permanent_error"
    assert client.replay(dead_id) == "ok"
    assert client.wait(dead_id, timeout=60).state is JobState.DEAD  # refused again, dead-lettered again
    assert [d.id for d in client.dead_letters()] == [dead_id]
    assert client.purge_dead_letters() == 1
    assert client.dead_letters() == []


def test_http_client_and_broker_client_behave_the_same(
    api_server: str, stack: Stack, r: redis.Redis, settings: Settings
) -> None:
    stack.start_worker(concurrency=10)
    wait_workers(r, 1)
    http = HttpClient(api_server, token=TOKEN)
    _round_trip(http)
    http.close()
    r.flushall()
    wait_workers(r, 1)
    broker = Client(settings)
    _round_trip(broker)
    broker.close()
    with pytest.raises(ConfigError, match="token"):
        HttpClient(api_server, token="wrong").get("x")


def test_openapi_schema_is_served_and_describes_the_routes(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/dead-letters",
            "/v1/dead-letters/{record_id}", "/v1/dead-letters/{record_id}/replay", "/v1/dead-letters/replay",
            "/healthz", "/readyz", "/metrics"} <= paths
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/BatchIn"} in body["anyOf"]
    assert "JobIn" in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # What the routes really answer, with the configured limits (max_batch is 5 in these tests).
    submit = schema["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"200", "202", "401", "408", "413", "422", "503"} <= set(submit)
    assert submit["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ValidationProblem"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    job = schema["components"]["schemas"]["JobIn"]["properties"]
    assert job["context"]["maxItems"] == 20 and job["question"]["maxLength"] == 8000
    assert schema["components"]["schemas"]["BatchIn"]["properties"]["jobs"]["maxItems"] == 5
    assert "503" in schema["paths"]["/healthz"]["get"]["responses"]
    assert api.get("/docs").status_code == 200 and api.get("/redoc").status_code == 200


def test_unknown_query_parameters_are_refused(api: TestClient) -> None:
    reply = api.get("/v1/jobs/x/result", params={"wiat": 30})
    assert reply.status_code == 422
    assert reply.json()["detail"] == [{"field": "wiat", "problem": "unknown query parameter"}]
    assert api.get("/v1/dead-letters", params={"limit": 5}).status_code == 200


@pytest.mark.parametrize(("user", "password"), [("admin", ""), ("admin", "   "), ("", "secret"), (" \t", "secret")])
def test_flower_refuses_blank_credentials(stack: Stack, user: str, password: str) -> None:
    env = stack.env(ASKQ_FLOWER__USER=user, ASKQ_FLOWER__PASSWORD=password, ASKQ_FLOWER__PORT=str(free_port()))
    try:
        out = subprocess.run([sys.executable, "-m", "askq", "flower"], env=env, capture_output=True, text=True,
                             timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Flower started with user {user!r} and password {password!r}")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    field = "password" if user.strip() else "user"
    assert f"flower.{field}" in out.stderr and "blank" in out.stderr, out.stderr
    if password.strip():
        assert password not in out.stderr


@pytest.mark.parametrize("body", [b"[" * 200_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                  b'{"question": "hi", "metadata": ' + b"[" * 40 + b"]" * 40 + b"}"])
def test_deeply_nested_json_gets_422_not_500(settings: Settings, r: redis.Redis, body: bytes) -> None:
    app = create_app(settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN])}))
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
        reply = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 422, reply.text[:300]
    assert "nested deeper than 32" in reply.json()["message"]
    assert nothing_enqueued(r, settings)


def test_nesting_inside_strings_does_not_count(api: TestClient, r: redis.Redis) -> None:
    question = "[[[{{{" * 100 + '\\" ]]'
    reply = api.post("/v1/jobs", content=json.dumps({"question": question, "context": ["{" * 500]}).encode(),
                     headers={"Content-Type": "application/json"})
    assert reply.status_code == 202, reply.text
    job = api.get(f"/v1/jobs/{reply.json()['id']}").json()
    assert job["question"] == question


def test_many_long_polls_share_one_poller_and_all_return(stack: Stack, r: redis.Redis, settings: Settings) -> None:
    url, proc = serve_api(stack)
    try:
        client = Client(settings)
        ids = client.submit_many([{"question": f"Where is order {i}?"} for i in range(200)])
        client.close()
        replies: list[int] = []

        async def poll_all() -> None:
            limits = httpx.Limits(max_connections=300)
            async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as http:
                async def one(job_id: str) -> None:
                    replies.append((await http.get(f"/v1/jobs/{job_id}/result", params={"wait": 3})).status_code)
                await asyncio.gather(*(one(i) for i in ids))

        poller = threading.Thread(target=asyncio.run, args=(poll_all(),))
        poller.start()
        api = psutil.Process(proc.pid)
        redis_port = r.connection_pool.connection_kwargs["port"]

        def redis_clients() -> int:  # the API process's own connections to Redis
            return sum(1 for c in api.net_connections("tcp") if c.raddr and c.raddr.port == redis_port)

        # While the 200 callers wait, the API holds neither a thread nor a Redis connection per caller.
        threads, connections = api.num_threads(), redis_clients()
        while poller.is_alive():
            threads, connections = max(threads, api.num_threads()), max(connections, redis_clients())
            assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
            poller.join(0.2)
        assert threads <= 12, threads
        assert connections <= 6, connections
        # Each returned when its wait ran out (no worker runs): a 202 with the job still queued.
        assert replies == [202] * 200
        # A job that finishes mid-wait is returned then, as a 200.
        stack.start_worker(concurrency=5)
        done = httpx.get(f"{url}/v1/jobs/{ids[0]}/result", params={"wait": 60}, headers=AUTH, timeout=90)
        assert done.status_code == 200 and done.json()["state"] == "succeeded"
        assert httpx.get(f"{url}/v1/jobs/nope/result", params={"wait": 5}, headers=AUTH).status_code == 404
    finally:
        proc.terminate()
        proc.wait(15)


def _open_idle(port: int, count: int, partial: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if partial:
            sock.sendall(partial)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        while chunk := sock.recv(4096):
            if not chunk:
                break
        return True  # end of stream: the server closed it (after its 408, if any)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_idle_and_slow_header_connections_are_dropped_and_probes_answer(stack: Stack) -> None:
    url, proc = serve_api(stack, ASKQ_API__HEADER_TIMEOUT_S="15", ASKQ_API__MAX_PENDING_CONNECTIONS="100",
                          ASKQ_API__MAX_CONNECTIONS="200")
    port = int(url.rsplit(":", 1)[1])
    socks: list[socket.socket] = []
    try:
        # Keep-alive connections that finished one request, then start another and stall.
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            sock.setblocking(False)
            socks.append(sock)
        # 300 silent or half-sent connections: more than the server's whole connection limit.
        socks += _open_idle(port, 150, b"")
        socks += _open_idle(port, 150, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        still_open = list(socks)

        def closed_now() -> int:
            still_open[:] = [s for s in still_open if not _closed_by_server(s)]
            return len(socks) - len(still_open)

        def probe_answers() -> bool:
            return httpx.get(f"{url}/healthz", timeout=30).status_code == 200

        # Past the pending cap the oldest idle ones are dropped (after a 1 s grace), so a probe gets
        # through while the newest 100 are still held, long before their 15 s header timeout.
        wait_for(probe_answers, 14, what="/healthz to answer beside the idle connections")
        assert closed_now() >= 200
        assert still_open, "the probe was only answered once every idle connection had timed out"
        # The rest are closed by the header timeout (15 s), with generous slack.
        wait_for(lambda: closed_now() == len(socks), 60, what="the idle connections to be closed")
        assert probe_answers()
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        proc.wait(15)


def test_a_trickled_body_gets_408(stack: Stack, r: redis.Redis) -> None:
    url, proc = serve_api(stack, ASKQ_API__BODY_TIMEOUT_S="2")
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + TOKEN.encode() +
                         b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"question\": ")
            reply = b""
            while chunk := sock.recv(65536):  # the server closes after its 408
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert b"not received within 2 s" in reply
        assert r.llen("askq") == 0
    finally:
        proc.terminate()
        proc.wait(15)


def test_long_poll_with_redis_unreachable_is_503(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0"),
                                       "api": ApiSettings(tokens=[TOKEN])})
    with TestClient(create_app(down), headers=AUTH) as client:
        for wait in (0, 1):
            reply = client.get("/v1/jobs/some-job/result", params={"wait": wait})
            assert reply.status_code == 503, reply.text
            assert reply.headers["retry-after"] == "5"
