"""A hostile provider cannot hold a job past its timeout, fill a worker's memory or redirect its prompt.

Each test runs the real ChatOpenAI client against the simulator over HTTP. The primary is
hostile; the secondary is healthy, so "the job moved on" shows as the secondary's answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web

from askq.config.settings import ProviderSettings, Settings
from askq.core.job import JobSpec, JobState
from askq.errors import ProviderError
from askq.producers.client import Client
from askq.sim.answers import answer_for
from askq.sim.replies import completion_data
from askq.stack import Stack
from askq.workers.cache import cache_key
from askq.workers.chain import Chain
from tests.conftest import Sim, wait_workers
from tests.ladderkit import SleepRecorder, job, run_ladder, settings_with

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def _providers(sim_url: str, **primary: Any) -> list[dict[str, Any]]:
    return [
        {"name": "primary", "base_url": sim_url, "model": "primary", "timeout_s": 5.0,
         "retry": {"max_attempts": 2}, **primary},
        {"name": "secondary", "base_url": sim_url, "model": "secondary", "timeout_s": 5.0, "prompt": "short"},
    ]


def _primary_fails_then_secondary_answers(settings: Settings, sim: Sim, spec: JobSpec,
                                          **primary: Any) -> list[dict[str, Any]]:
    s = settings_with(settings, sim.url, _providers(sim.url, **primary))
    [result] = run_ladder(s, [spec], SleepRecorder())
    assert (result.outcome, result.source, result.degraded) == ("answered", "secondary", False)
    assert result.answer is not None and result.answer.text == answer_for(spec.question, "secondary")
    return [a for a in result.attempts if a["provider"] == "primary"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_trickled_reply_is_cut_at_timeout_s_and_the_next_tier_answers(settings: Settings, sim: Sim,
                                                                       r: redis.Redis, headers: bool) -> None:
    # 10 bytes/s: a byte every 0.1 s keeps a read timeout that resets per byte from ever firing;
    # the ~600-byte reply would take a minute. timeout_s is the whole request's deadline.
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [
        {"kind": "trickle", "trickle_bytes_per_s": 10, "trickle_headers": headers}]}}})
    failed = _primary_fails_then_secondary_answers(settings, sim, job("Where is my order?"), timeout_s=1.0)
    # A timeout is transient: retried per the policy (2 tries), then the next tier.
    assert [a["error_class"] for a in failed] == ["transient", "transient"]
    assert all(a["latency_s"] < 10 for a in failed)  # cut near 1 s, not after the whole reply
    assert "timeout_s" in failed[0]["error"]
    assert sim.requests("primary") == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "extra"), [
    ("oversize", {}),                           # 50 MB with Content-Length: refused before reading
    ("oversize", {"content_length": False}),    # 50 MB chunked: cut while reading
    ("gzip_bomb", {"size_bytes": 64 * MiB}),    # 64 KB on the wire, 64 MiB inflated
], ids=["content_length", "chunked", "gzip_bomb"])
def test_response_over_the_byte_cap_is_oversized_and_not_retried(settings: Settings, sim: Sim, r: redis.Redis,
                                                                  kind: str, extra: dict[str, Any]) -> None:
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": kind, **extra}]}}})
    failed = _primary_fails_then_secondary_answers(settings, sim, job("Can I return this?"))
    assert [a["error_class"] for a in failed] == ["oversized"]
    assert "max_response_bytes" in failed[0]["error"]
    assert sim.requests("primary") == 1


def test_answer_over_the_char_cap_is_oversized_and_never_cached(settings: Settings, sim: Sim,
                                                                r: redis.Redis) -> None:
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": "oversize", "size_bytes": 5000}]}}})
    spec = job("Do you ship to Iceland?")
    failed = _primary_fails_then_secondary_answers(settings, sim, spec, max_answer_chars=4000)
    assert [a["error_class"] for a in failed] == ["oversized"] and "max_answer_chars" in failed[0]["error"]
    cached = json.loads(r.get(cache_key(spec, "v1")) or "{}")
    assert cached["provider"] == "secondary" and len(cached["answer"]) < 4000


@pytest.mark.timeout(60)
def test_a_20_mib_answer_is_never_stored_as_a_result_or_in_the_cache(stack: Stack, r: redis.Redis,
                                                                      settings: Settings, sim: Sim) -> None:
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [
        {"kind": "oversize", "size_bytes": 20 * MiB}]}}})
    stack.start_worker(concurrency=4)
    wait_workers(r, 1)
    before = int(r.info("memory")["used_memory"])
    client = Client(settings)
    job_id = client.submit("How big can an answer be?")
    view = client.wait(job_id, timeout=40)
    assert view.state is JobState.SUCCEEDED and view.result is not None
    assert view.result.source == "secondary" and len(view.result.answer) < 10_000
    cached = r.get(cache_key(JobSpec.new("How big can an answer be?"), "v1"))
    assert cached is not None and len(cached) < 10_000
    assert int(r.info("memory")["used_memory"]) - before < 4 * MiB
    assert sim.requests("primary") == 1


def test_redirect_is_not_followed_and_moves_to_the_next_tier(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    # The redirect target answers "[redirected] ..." and counts itself: a followed redirect shows.
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [{"kind": "redirect"}]}}})
    failed = _primary_fails_then_secondary_answers(settings, sim, job("Where is my parcel?"))
    assert [(a["error_class"], a["status"]) for a in failed] == [("redirected", 307)]
    assert sim.stats()["redirects_followed"] == 0
    assert sim.requests("primary") == 1
    # The same for a permanent redirect to another host name (and port) of the same machine.
    elsewhere = sim.root.replace("127.0.0.1", "localhost") + "/_sim/redirected/v1/chat/completions"
    sim.configure({"latency_s": 0.02, "models": {"primary": {"faults": [
        {"kind": "redirect", "redirect_status": 308, "location": elsewhere}]}}})
    failed = _primary_fails_then_secondary_answers(settings, sim, job("Where is my other parcel?"))
    assert [(a["error_class"], a["status"]) for a in failed] == [("redirected", 308)]
    assert sim.stats()["redirects_followed"] == 0


def _peak_growth(sim: Sim, settings: Settings, model: str, cap: int) -> dict[str, Any]:
    """Run one call in a fresh process; its peak RSS growth over a warmed-up call, in MiB."""
    probe = [sys.executable, "-m", "tests.memprobe", sim.url, model, str(cap)]
    assert settings.redis_url is not None  # importing workers builds the Celery app on it: no embedded Redis
    env = {**os.environ, "ASKQ_REDIS_URL": settings.redis_url.get_secret_value(), "ASKQ_VAR_DIR": str(settings.var_dir)}
    done = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.timeout(150)
@pytest.mark.parametrize("fault", [
    {"kind": "oversize"},                             # 50 MB, Content-Length
    {"kind": "oversize", "content_length": False},    # 50 MB, chunked
    {"kind": "gzip_bomb", "size_bytes": 300_000_000},  # 300 KB that inflates to 300 MB
], ids=["content_length", "chunked", "gzip_bomb"])
def test_huge_body_does_not_grow_the_calling_process_past_the_cap(sim: Sim, settings: Settings,
                                                                  fault: dict[str, Any]) -> None:
    sim.configure({"latency_s": 0.02, "models": {"hostile": {"faults": [fault]}}})
    report = _peak_growth(sim, settings, "hostile", MiB)
    assert report["outcome"] == "oversized"
    # The cap is 1 MiB: a few copies of it (raw, inflated, joined) plus allocator slack.
    assert report["growth_mib"] < 8 + 8 * 1, report


@pytest.mark.timeout(60)
def test_worker_cuts_a_trickling_primary_and_answers_from_the_secondary(stack: Stack, r: redis.Redis,
                                                                         settings: Settings, sim: Sim) -> None:
    """The same through a real worker process: a trickle used to hold the job until run_timeout_s."""
    providers = _providers(sim.url, timeout_s=1.0)
    stack.start_worker(concurrency=4, ASKQ_PROVIDERS=json.dumps(providers))
    wait_workers(r, 1)
    client = Client(settings)
    job_id = client.submit("Where is my order? [[sim:trickle@primary]]")  # 10 bytes/s: a minute per reply
    view = client.wait(job_id, timeout=40)
    assert view.state is JobState.SUCCEEDED and view.result is not None
    assert view.result.source == "secondary" and not view.result.degraded
    assert sim.requests("primary") == 2


class _Encoded:
    """A one-route provider in a background loop that answers a completion in a given encoding."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = web.Application()
        app.router.add_post("/{encoding}/v1/chat/completions", self.answer)
        self.runner = web.AppRunner(app)
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def answer(self, request: web.Request) -> web.Response:
        encoding = request.match_info["encoding"]
        body = json.dumps(completion_data("m", "A compressed answer.", 5, "stop")).encode()
        packed = {
            "gzip": lambda b: zlib.compress(b, wbits=16 + zlib.MAX_WBITS),
            "deflate": zlib.compress,  # zlib-wrapped, as specified
            "deflate-raw": lambda b: zlib.compress(b, wbits=-zlib.MAX_WBITS),  # as some servers send it
            "br": lambda b: b"\x0b\x02\x80not really brotli",
            "gzip-corrupt": lambda b: zlib.compress(b, wbits=16 + zlib.MAX_WBITS)[:20] + b"garbage" * 10,
        }[encoding](body)
        header = encoding.split("-")[0]
        return web.Response(body=packed, headers={"Content-Type": "application/json", "Content-Encoding": header})

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.mark.timeout(30)
def test_compressed_replies_are_inflated_and_other_encodings_refused() -> None:
    """Real providers gzip their replies: those still answer once askq inflates them itself."""
    server = _Encoded()

    def ask(encoding: str) -> str:
        chain = Chain(ProviderSettings(name="p", base_url=f"http://127.0.0.1:{server.port}/{encoding}/v1",
                                       model="m", timeout_s=5))

        async def once() -> str:
            try:
                return (await chain.ask(job("q"))).text
            except ProviderError as exc:
                return exc.error_class
            finally:
                await chain.aclose()

        return asyncio.run(once())

    try:
        assert ask("gzip") == ask("deflate") == ask("deflate-raw") == "A compressed answer."
        assert ask("br") == "transient"  # not asked for, so it cannot be inflated under the cap
        assert ask("gzip-corrupt") == "transient"  # a malformed body
    finally:
        server.close()
