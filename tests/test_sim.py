"""Tests of the LLM simulator, driven through the real openai SDK and langchain-openai clients."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from langchain_openai import ChatOpenAI

from askq.sim import SimConfig, answer_for, count_tokens, start
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


class Sim:
    """Handle on a simulator running in a background event loop, with control helpers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(start(SimConfig(), "127.0.0.1", 0), self.loop)
        self.runner: web.AppRunner
        self.runner, self.port = future.result(timeout=10)
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.http = httpx.Client(base_url=self.url, timeout=5)

    def close(self) -> None:
        """Stop the server and its loop."""
        self.http.close()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    def configure(self, config: dict[str, Any]) -> None:
        """Replace the fault config and restart the stats and window clock."""
        r = self.http.put("/_sim/faults", json=config)
        assert r.status_code == 200, r.text
        self.http.post("/_sim/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        """Return the server's counters."""
        data: dict[str, Any] = self.http.get("/_sim/stats").json()
        return data

    def client(self, timeout: float = 5.0, api_key: str = "sk-test") -> openai.OpenAI:
        """Return an openai client with retries off, so each fault surfaces as raised."""
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=timeout)


@pytest.fixture(scope="module")
def server() -> Iterator[Sim]:
    """Run one simulator for the whole module; tests reconfigure it."""
    sim = Sim()
    yield sim
    sim.close()


@pytest.fixture
def sim(server: Sim) -> Sim:
    """Give each test a simulator with no faults, no latency and fresh stats."""
    server.configure({})
    return server


def ask(client: openai.OpenAI, question: str, model: str = "primary") -> Any:
    """Send one chat completion with `question` as the user message."""
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])


def test_answer_is_deterministic(sim: Sim) -> None:
    client = sim.client()
    first = ask(client, "What is a queue?")
    second = ask(client, "What is a queue?")
    expected = answer_for("What is a queue?", "primary")
    assert first.choices[0].message.content == expected == second.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.model == "primary"
    assert first.usage is not None
    assert first.usage.completion_tokens == count_tokens(expected) > 20
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert answer_for("What is a queue?", "other") != expected
    assert answer_for("Another question", "primary") != expected


def test_question_is_last_user_message(sim: Sim) -> None:
    messages: Any = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    reply = sim.client().chat.completions.create(model="m", messages=messages)
    assert reply.choices[0].message.content == answer_for("second", "m")


def test_langchain_happy_path(sim: Sim) -> None:
    llm = ChatOpenAI(base_url=sim.base_url, api_key="sk-test", model="primary", max_retries=0, timeout=5)
    reply = llm.invoke("Hello from langchain")
    assert reply.content == answer_for("Hello from langchain", "primary")


def test_models_lists_configured_and_seen(sim: Sim) -> None:
    sim.configure({"models": {"configured-model": {}}})
    client = sim.client()
    ask(client, "hi", model="asked-model")
    ids = {m.id for m in client.models.list()}
    assert {"configured-model", "asked-model"} <= ids


def test_rate_limit_carries_retry_after(sim: Sim) -> None:
    sim.configure({"faults": [{"kind": "rate_limit", "retry_after_s": 2.5}]})
    with pytest.raises(openai.RateLimitError) as info:
        ask(sim.client(), "q")
    assert info.value.response.headers["retry-after"] == "3"  # whole seconds, rounded up
    assert info.value.response.headers["retry-after-ms"] == "2500"
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.type == "rate_limit_error"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(sim: Sim, status: int) -> None:
    fault: dict[str, Any] = {"kind": "server_error"}
    if status != 500:
        fault["status"] = status
    sim.configure({"faults": [fault]})
    with pytest.raises(openai.InternalServerError) as info:
        ask(sim.client(), "q")
    assert info.value.status_code == status


@pytest.mark.parametrize(
    ("kind", "exc", "status", "code"),
    [
        ("auth", openai.AuthenticationError, 401, "invalid_api_key"),
        ("forbidden", openai.PermissionDeniedError, 403, "permission_denied"),
        ("not_found", openai.NotFoundError, 404, "model_not_found"),
        ("bad_request", openai.BadRequestError, 400, "invalid_request"),
        ("content_policy", openai.BadRequestError, 400, "content_filter"),
        ("context_length", openai.BadRequestError, 400, "context_length_exceeded"),
        # The SDK has no class of its own for 408; it raises the base status error.
        ("timeout", openai.APIStatusError, 408, "request_timeout"),
    ],
)
def test_error_faults(sim: Sim, kind: str, exc: type[openai.APIStatusError], status: int, code: str) -> None:
    sim.configure({"models": {"primary": {"faults": [{"kind": kind}]}}})
    with pytest.raises(exc) as info:
        ask(sim.client(), "q")
    assert info.value.status_code == status
    assert info.value.code == code
    # The fault is per model: another model still answers.
    assert ask(sim.client(), "q", model="secondary").choices[0].message.content


def _hold_request(sim: Sim, model: str) -> socket.socket:
    """Send a chat request on a raw socket and leave it open: it stays in flight until closed."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "q"}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer sk-test\r\nContent-Length: {len(body)}\r\n\r\n")
    held = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
    held.sendall(head.encode() + body)
    return held


def test_hang_times_out_without_blocking_others(sim: Sim) -> None:
    # The hang outlasts the test by far, so only a cancelled handler can end it in time.
    sim.configure({"models": {"slow": {"faults": [{"kind": "hang", "hang_s": 600}]}}})
    with _hold_request(sim, "slow"):
        wait_for(lambda: sim.stats()["in_flight"] == 1, 30, what="the hung request to arrive")
        # The hang is an asyncio sleep: another request is answered while it is in progress.
        assert ask(sim.client(timeout=30), "q", model="fast").choices[0].message.content
        stats = sim.stats()
        assert stats["responses"] == {"fast": {"ok": 1}}
        assert stats["in_flight"] == 1 and stats["max_in_flight"] == 2
    # The client hanging up cancels the server's handler rather than leaving it asleep.
    wait_for(lambda: sim.stats()["in_flight"] == 0, 30, what="the hung handler to be cancelled")
    assert sim.stats()["responses"]["slow"] == {"hang": 1}
    # Through the SDK, a hang surfaces as a timeout, and its handler is cancelled as well.
    with pytest.raises(openai.APITimeoutError):
        ask(sim.client(timeout=0.5), "q", "slow")
    wait_for(lambda: sim.stats()["in_flight"] == 0, 30, what="the timed-out handler to be cancelled")
    assert sim.stats()["responses"]["slow"] == {"hang": 2}


def test_reset_is_a_connection_error(sim: Sim) -> None:
    sim.configure({"faults": [{"kind": "reset"}]})
    with pytest.raises(openai.APIConnectionError) as info:
        ask(sim.client(), "q")
    assert not isinstance(info.value, openai.APITimeoutError)


def test_malformed_body_escapes_the_sdk_as_json_error(sim: Sim) -> None:
    # The openai SDK parses a 200 application/json body with response.json()
    # and does not wrap the failure: callers see a bare json.JSONDecodeError
    # (a ValueError), not an openai.APIError.
    sim.configure({"faults": [{"kind": "malformed"}]})
    with pytest.raises(json.JSONDecodeError):
        ask(sim.client(), "q")


def test_truncated_and_empty(sim: Sim) -> None:
    client = sim.client()
    truncated = ask(client, "q [[sim:truncated]]")
    full = answer_for("q [[sim:truncated]]", "primary")
    assert truncated.choices[0].finish_reason == "length"
    content = truncated.choices[0].message.content
    assert content and full.startswith(content) and len(content) < len(full)
    empty = ask(client, "q [[sim:empty]]")
    assert empty.choices[0].message.content == ""
    assert empty.choices[0].finish_reason == "stop"


def test_context_length_limit(sim: Sim) -> None:
    sim.configure({"models": {"primary": {"max_context_chars": 50}}})
    client = sim.client()
    assert ask(client, "short").choices[0].message.content == answer_for("short", "primary")
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "x" * 51)
    assert info.value.code == "context_length_exceeded"


def test_window_faults_fire_only_inside_window(sim: Sim) -> None:
    sim.configure(
        {
            "faults": [
                {"kind": "server_error", "window": [0, 0.5]},
                {"kind": "rate_limit", "window": [0.5, 1.0]},
            ]
        }
    )
    client = sim.client()
    began = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        ask(client, "q")
    time.sleep(max(0.0, 0.55 - (time.monotonic() - began)))
    with pytest.raises(openai.RateLimitError):
        ask(client, "q")
    time.sleep(max(0.0, 1.05 - (time.monotonic() - began)))
    assert ask(client, "q").choices[0].finish_reason == "stop"


def _rate_limited_count(sim: Sim, n: int) -> list[bool]:
    client = sim.client()
    outcomes = []
    for i in range(n):
        try:
            ask(client, f"q{i}")
            outcomes.append(False)
        except openai.RateLimitError:
            outcomes.append(True)
    return outcomes


def test_probability_faults_are_seeded(sim: Sim) -> None:
    config = {"seed": 7, "faults": [{"kind": "rate_limit", "probability": 0.3}]}
    sim.configure(config)
    first = _rate_limited_count(sim, 200)
    assert 30 <= sum(first) <= 90
    assert sim.stats()["responses"]["primary"]["rate_limit"] == sum(first)
    sim.configure(config)  # re-seeds the fault draws
    assert _rate_limited_count(sim, 200) == first


def test_markers_force_faults(sim: Sim) -> None:
    client = sim.client()
    with pytest.raises(openai.InternalServerError):
        ask(client, "boom [[sim:server_error]]", model="a")
    with pytest.raises(openai.InternalServerError):
        ask(client, "boom [[sim:server_error]]", model="b")
    with pytest.raises(openai.RateLimitError):
        ask(client, "only a [[sim:rate_limit@a]]", model="a")
    reply = ask(client, "only a [[sim:rate_limit@a]]", model="b")
    assert reply.choices[0].message.content == answer_for("only a [[sim:rate_limit@a]]", "b")


def test_require_key(sim: Sim) -> None:
    sim.configure({"require_key": "sekrit-key"})
    with pytest.raises(openai.AuthenticationError) as info:
        ask(sim.client(api_key="sk-wrong-key-123"), "q")
    # Like some real providers, the 401 echoes the key it was given, never the one it expects.
    assert info.value.response.json()["error"]["message"] == "Incorrect API key provided: sk-wrong-key-123 (simulated)."
    assert "sekrit-key" not in info.value.response.text
    assert ask(sim.client(api_key="sekrit-key"), "q").choices[0].message.content
    shown = sim.http.get("/_sim/faults").text
    assert "sekrit-key" not in shown
    assert sim.stats()["responses"]["primary"] == {"unauthorized": 1, "ok": 1}
    missing = httpx.post(f"{sim.base_url}/chat/completions", json={"model": "primary", "messages": [
        {"role": "user", "content": "q"}]}, timeout=5)
    assert missing.status_code == 401 and "didn't provide an API key" in missing.json()["error"]["message"]


def test_auth_fault_echoes_the_key_it_was_given(sim: Sim) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        ask(sim.client(api_key="sk-live-abc123"), "q [[sim:auth]]")
    assert "Incorrect API key provided: sk-live-abc123" in info.value.message


def test_stats_count_requests_per_model(sim: Sim) -> None:
    client = sim.client()
    for _ in range(3):
        ask(client, "q", model="a")
    with pytest.raises(openai.RateLimitError):
        ask(client, "q [[sim:rate_limit]]", model="b")
    stats = sim.stats()
    assert stats["requests"] == {"a": 3, "b": 1}
    assert stats["responses"] == {"a": {"ok": 3}, "b": {"rate_limit": 1}}
    assert len(stats["arrivals"]["a"]) == 3
    assert stats["arrivals"]["a"] == sorted(stats["arrivals"]["a"])
    assert stats["in_flight"] == 0 and stats["max_in_flight"] >= 1
    sim.http.post("/_sim/reset").raise_for_status()
    assert sim.stats()["total_requests"] == 0


def test_model_latency_overrides_global(sim: Sim) -> None:
    # The global latency is far longer than any wait here: only an override can answer in time.
    sim.configure({"latency_s": 600.0, "models": {"fast": {"latency_s": 0.0}, "slow": {"latency_s": 0.4}}})
    client = sim.client(timeout=30)
    assert ask(client, "q", model="fast").choices[0].message.content
    began = time.monotonic()
    ask(client, "q", model="slow")
    assert time.monotonic() - began >= 0.4  # a lower bound: the sleep guarantees it
    # A model without an override waits the global latency.
    with pytest.raises(openai.APITimeoutError):
        ask(sim.client(timeout=0.5), "q", model="other")
    wait_for(lambda: sim.stats()["in_flight"] == 0, 30, what="the timed-out handler to be cancelled")
    assert sim.stats()["responses"] == {"fast": {"ok": 1}, "slow": {"ok": 1}, "other": {"ok": 1}}


def test_stream_is_rejected(sim: Sim) -> None:
    with pytest.raises(openai.BadRequestError):
        sim.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=True
        )


def test_invalid_config_is_422(sim: Sim) -> None:
    r = sim.http.put("/_sim/faults", json={"faults": [{"kind": "meteor"}]})
    assert r.status_code == 422
    assert "faults.0.kind" in r.text
    r = sim.http.put("/_sim/faults", json={"latency": 1})
    assert r.status_code == 422 and "latency" in r.text
    r = sim.http.put("/_sim/faults", json={"faults": [{"kind": "rate_limit", "status": 503}]})
    assert r.status_code == 422


def test_command_line_entry_point() -> None:
    config = json.dumps({"faults": [{"kind": "rate_limit", "probability": 0.0}]})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "askq.sim", "--port", "0", "--latency", "0", "--seed", "1", "--faults", config]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sim listening on http://127.0.0.1:") and line.endswith("/v1")
        base_url = line.removeprefix("sim listening on ")
        client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=5)
        assert ask(client, "cli").choices[0].message.content == answer_for("cli", "primary")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        if proc.stdout is not None:
            proc.stdout.close()

    bad = subprocess.run(
        [sys.executable, "-m", "askq.sim", "--port", "0", "--faults", '{"nope": 1}'],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=10,
    )
    assert bad.returncode == 2
    assert "nope" in bad.stderr


# --- hostile providers: trickle, oversize, gzip bomb, redirect ---------------------------------


def _chat_body(question: str = "q", model: str = "primary") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": question}]}).encode()


def _read_for(sock: socket.socket, seconds: float) -> bytes:
    """Everything the socket delivers within `seconds` (less if the server closes)."""
    got = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("headers", [False, True])
def test_trickle_sends_the_reply_a_few_bytes_a_second(sim: Sim, headers: bool) -> None:
    fault: dict[str, Any] = {"kind": "trickle", "trickle_bytes_per_s": 20}
    if headers:
        fault["trickle_headers"] = True
    sim.configure({"faults": [fault]})
    with _hold_request(sim, "primary") as held:
        got = _read_for(held, 1.5)
    # About 30 bytes in 1.5 s at 20 bytes/s; far from the ~600-byte reply, never all of it.
    if headers:
        assert 0 < len(got) <= 20 * 1.5 + 20
        assert b"\r\n\r\n" not in got  # still inside the head: a header read timeout never fires
    else:
        head, sep, body = got.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 200") and 0 < len(body) <= 20 * 1.5 + 20
    wait_for(lambda: sim.stats()["in_flight"] == 0, 30, what="the trickle to stop when the client left")
    assert sim.stats()["responses"]["primary"] == {"trickle": 1}


def test_trickle_given_time_is_a_whole_completion(sim: Sim) -> None:
    sim.configure({"faults": [{"kind": "trickle", "trickle_bytes_per_s": 5000, "trickle_headers": True}]})
    assert ask(sim.client(), "slowly").choices[0].message.content == answer_for("slowly", "primary")


@pytest.mark.parametrize("content_length", [True, False])
def test_oversize_streams_a_huge_answer(sim: Sim, content_length: bool) -> None:
    size = 5_000_000
    sim.configure({"faults": [{"kind": "oversize", "size_bytes": size, "content_length": content_length}]})
    with httpx.stream("POST", f"{sim.base_url}/chat/completions", content=_chat_body(), timeout=10) as reply:
        assert reply.status_code == 200
        if content_length:
            assert int(reply.headers["content-length"]) > size
        else:
            assert "content-length" not in reply.headers and reply.headers["transfer-encoding"] == "chunked"
        body = reply.read()
    content = json.loads(body)["choices"][0]["message"]["content"]
    assert len(content) == size and content.startswith("oversize oversize")


def test_gzip_bomb_is_small_on_the_wire_and_inflates_to_a_completion(sim: Sim) -> None:
    size = 20_000_000
    sim.configure({"faults": [{"kind": "gzip_bomb", "size_bytes": size}]})
    with httpx.stream("POST", f"{sim.base_url}/chat/completions", content=_chat_body(), timeout=30) as reply:
        assert reply.headers["content-encoding"] == "gzip"
        raw = b"".join(reply.iter_raw())
    assert len(raw) < size / 500
    content = json.loads(zlib.decompress(raw, 16 + zlib.MAX_WBITS))["choices"][0]["message"]["content"]
    assert len(content) == size


def test_redirect_points_at_an_answer_that_tells_it_was_followed(sim: Sim) -> None:
    sim.configure({"models": {"primary": {"faults": [{"kind": "redirect"}]}}})
    first = httpx.post(f"{sim.base_url}/chat/completions", content=_chat_body("where?"), timeout=5)
    assert first.status_code == 307 and first.headers["location"] == "/_sim/redirected/v1/chat/completions"
    assert sim.stats()["redirects_followed"] == 0
    followed = httpx.post(f"{sim.base_url}/chat/completions", content=_chat_body("where?"), timeout=5,
                          follow_redirects=True)
    assert followed.json()["choices"][0]["message"]["content"] == "[redirected] " + answer_for("where?", "primary")
    assert sim.stats()["redirects_followed"] == 1
    sim.configure({"faults": [{"kind": "redirect", "redirect_status": 308, "location": "http://localhost:1/v1"}]})
    moved = httpx.post(f"{sim.base_url}/chat/completions", content=_chat_body(), timeout=5)
    assert (moved.status_code, moved.headers["location"]) == (308, "http://localhost:1/v1")


def test_hostile_kinds_come_by_marker_or_by_name_never_in_a_random_mix(sim: Sim) -> None:
    from askq.sim.faults import FAULT_KINDS, HOSTILE_KINDS, MARKER_KINDS

    assert {"trickle", "oversize", "gzip_bomb", "redirect"} == HOSTILE_KINDS
    assert not FAULT_KINDS & HOSTILE_KINDS and MARKER_KINDS == FAULT_KINDS | HOSTILE_KINDS
    reply = httpx.post(f"{sim.base_url}/chat/completions", content=_chat_body("q [[sim:redirect]]"), timeout=5)
    assert reply.status_code == 307
    # Options of one kind on another are refused, not silently ignored.
    for bad in ({"kind": "oversize", "trickle_bytes_per_s": 1}, {"kind": "redirect", "size_bytes": 1},
                {"kind": "trickle", "location": "/x"}, {"kind": "server_error", "malformed_as": "cut_json"}):
        assert sim.http.put("/_sim/faults", json={"faults": [bad]}).status_code == 422


def test_malformed_can_be_well_formed_json_of_the_wrong_shape(sim: Sim) -> None:
    sim.configure({"faults": [{"kind": "malformed", "malformed_as": "empty_object"}]})
    reply = httpx.post(f"{sim.base_url}/chat/completions", content=_chat_body(), timeout=5)
    assert (reply.status_code, reply.json()) == (200, {})
