"""`askq demo`: the whole stack on embedded defaults, a batch of questions, a summary.

Starts an embedded Redis under ./var, the simulator with a little injected trouble (rate
limits, 5xx, a hang now and then, the primary down for a few seconds so its breaker opens),
worker processes, submits the bundled customer-service questions, waits, prints a summary
and stops everything it started, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from askq.config.settings import Settings, load_settings
from askq.core import keys
from askq.core.connection import connect
from askq.core.health import check_health
from askq.core.job import JobView
from askq.core.liveness import list_workers
from askq.core.redisserver import discover, ensure_url, free_port, stop_if_unused
from askq.core.stats import percentile, read_counters
from askq.errors import AskqError
from askq.producers.client import Client
from askq.producers.jobsfile import read_jobs_file
from askq.stack import Stack

console = Console(stderr=True)

DEMO_FAULTS: dict[str, Any] = {
    "models": {
        "primary": {
            "faults": [
                {"kind": "rate_limit", "probability": 0.02, "retry_after_s": 1},
                {"kind": "server_error", "status": 503, "probability": 0.02},
                {"kind": "reset", "probability": 0.01},
                # The primary goes down for a while: its breaker opens and the secondary answers.
                {"kind": "server_error", "status": 500, "window": [1, 3]},
            ]
        },
        "secondary": {"faults": [{"kind": "server_error", "probability": 0.03}]},
    }
}


CHUNK = 20
CHUNK_INTERVAL_S = 1.0


def questions_file() -> Path:
    return Path(str(resources.files("askq") / "data" / "questions.jsonl"))


def _has_result(view: JobView | None) -> bool:
    return view is not None and view.result is not None


def write_marks(client: Client, ids: list[str], views: dict[str, JobView | None]) -> dict[str, int]:
    """How often outcomes were written: duplicates, refused late writes and re-dispatched jobs."""
    pipe = client.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), ["result_writes", "late_writes", "dispatch"])
        pipe.exists(keys.dead_letter(job_id))
    replies = pipe.execute()
    marks = [[int(x or 0) for x in fields] for fields in replies[0::2]]
    lettered = [bool(x) for x in replies[1::2]]
    # A duplicate is a job whose outcome was written twice: a second result write, or both a
    # result and a dead letter. Late writes (a run that lost its lease, refused: a stored result is
    # final) are counted apart; so are re-runs (jobs dispatched more than once), which wrote nothing twice.
    duplicates = sum(
        1 for (w, _, _), dead_letter, job_id in zip(marks, lettered, ids, strict=True)
        if w > 1 or (dead_letter and (w > 0 or _has_result(views.get(job_id))))
    )
    return {
        "duplicates": duplicates,
        "late_writes": sum(u for _, u, _ in marks),
        "redispatched": sum(1 for _, _, d in marks if d > 1),
    }


def summarize(client: Client, ids: list[str], before: dict[str, int]) -> dict[str, Any]:
    """Summary of a finished batch, from the job store and the counters it moved."""
    views = client.store.get_many(ids)
    after = read_counters(client.redis)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    states = Counter(v.state.value for v in views.values() if v is not None)
    sources = Counter(v.result.source for v in views.values() if v is not None and v.result is not None)
    latencies = sorted(v.result.latency_s for v in views.values() if v is not None and v.result is not None)
    dead_reasons = Counter(v.reason.value for v in views.values() if v is not None and v.reason is not None)
    terminal = states["succeeded"] + states["dead"]
    health = check_health(client.redis, client.settings.health.window_s)
    return {
        "submitted": len(ids),
        "succeeded": states["succeeded"],
        "dead": states["dead"],
        "lost": len(ids) - terminal,
        **write_marks(client, ids, views),
        "by_source": dict(sources),
        "degraded": sum(1 for v in views.values() if v is not None and v.result is not None and v.result.degraded),
        "dead_reasons": dict(dead_reasons),
        "retries": sum(v for k, v in delta.items() if k.startswith("retries:")),
        "fallbacks": delta.get("fallbacks", 0),
        "breaker_opened": sum(v for k, v in delta.items() if k.startswith("breaker_opened:")),
        "breaker_closed": sum(v for k, v in delta.items() if k.startswith("breaker_closed:")),
        "cache_hits": delta.get("cache_hits", 0),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p95_s": round(percentile(latencies, 95), 3),
        # The verdict `askq health` would give now: the alert thresholds over the recent window.
        "health": health.status,
        # Which checks are past their thresholds, and by how much.
        "health_detail": {
            c.name: f"{c.value:.1f} {c.unit} ({c.status}; {c.thresholds})"
            for c in health.checks
            if c.status not in ("healthy", "info") and c.value is not None
        },
    }


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="askq demo", show_header=False)
    for key in ("submitted", "succeeded", "dead", "lost", "duplicates", "degraded", "retries", "fallbacks",
                "breaker_opened", "breaker_closed", "cache_hits", "latency_p50_s", "latency_p95_s"):
        table.add_row(key, str(summary[key]))
    for source, count in sorted(summary["by_source"].items()):
        table.add_row(f"answered by {source}", str(count))
    for reason, count in sorted(summary["dead_reasons"].items()):
        table.add_row(f"dead: {reason}", str(count))
    for key, value in summary.get("extra", {}).items():
        table.add_row(key, str(value))
    table.add_row("health", str(summary["health"]))
    for name, value in summary["health_detail"].items():
        table.add_row(f"  {name}", str(value))
    Console().print(table)


def _wait_for_workers(client: Client, stack: Stack, timeout_s: float = 60.0) -> None:
    """Wait for this demo's workers' first heartbeats, so latency figures measure answering, not
    start-up (the Redis is shared: other workers, live or listed dead, do not count)."""
    pids = {proc.pid for proc in stack.workers}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pids <= {w.pid for w in list_workers(client.redis, client.settings) if w.state == "alive"}:
            return
        time.sleep(0.2)
    raise AskqError(f"workers did not start within {timeout_s:.0f}s; see {stack.var_dir}/worker*.log")


def _submit_and_wait(client: Client, stack: Stack, batch: list[dict[str, Any]], timeout_s: float,
                     as_json: bool) -> list[str]:
    """Submit the batch in chunks, then wait for every job, with progress bars; returns the ids."""
    ids: list[str] = []
    with Progress(console=console, transient=not as_json) as progress:
        sub = progress.add_task("submitting", total=len(batch))
        # The fault windows count from here; the batch trickles in over a few seconds so the
        # primary's outage, its breaker opening and its recovery all show.
        httpx.post(stack.sim_url.rsplit("/v1", 1)[0] + "/_sim/reset", timeout=5).raise_for_status()
        for start in range(0, len(batch), CHUNK):
            ids += client.submit_many(batch[start : start + CHUNK])
            progress.update(sub, advance=len(batch[start : start + CHUNK]))
            time.sleep(CHUNK_INTERVAL_S)
        done = progress.add_task("answering", total=len(ids))
        client.wait_many(ids, timeout_s, lambda finished: progress.update(done, completed=finished))
    return ids


def _start_flower(stack: Stack) -> str:
    """Start Flower on this stack with fresh credentials; returns the line that tells the operator."""
    port = free_port()
    password = secrets.token_urlsafe(12)
    stack.start_service("flower", ["flower", "--port", str(port)],
                        ASKQ_FLOWER__USER="askq", ASKQ_FLOWER__PASSWORD=password)
    return f"Flower: http://127.0.0.1:{port}  user askq  password {password}"


def _start_api(stack: Stack) -> str:
    """Start the HTTP API on loopback (no token needed there); returns where to find it."""
    port = free_port()
    stack.start_service("api", ["api", "--host", "127.0.0.1", "--port", str(port)])
    return f"HTTP API: http://127.0.0.1:{port}/docs"


def run_demo(
    jobs: int = 200, as_json: bool = False, workers: int = 2, timeout_s: float = 300.0, keep_running: bool = False
) -> int:
    settings = load_settings()
    items = read_jobs_file(questions_file())
    batch = [items[i % len(items)] | {"metadata": {"n": i}} for i in range(jobs)]
    # Stop cleanly on SIGTERM as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    configured = settings.redis_url.get_secret_value() if settings.redis_url else None
    # The directory's embedded Redis, the one every other askq command here uses (so `askq
    # status`, `askq dlq list` ... see the demo's jobs, and two demos never write one AOF from
    # two servers); stopped at the end only if the demo started it and no other askq process
    # still uses it.
    started_redis = configured is None and discover(settings.var_dir) is None
    redis_url = ensure_url(configured, settings.var_dir)
    try:
        return _run(settings, redis_url, batch, as_json, workers, timeout_s, keep_running)
    finally:
        if started_redis:
            stop_if_unused(settings.var_dir)


def _run(settings: Settings, redis_url: str, batch: list[dict[str, Any]], as_json: bool, workers: int,
         timeout_s: float, keep_running: bool) -> int:
    with Stack(settings.var_dir / "demo", redis_url=redis_url,
               env={"ASKQ_BREAKER__MIN_REQUESTS": "5", "ASKQ_BREAKER__COOLDOWN_S": "3"}) as stack:
        console.print("starting the simulator and workers ...")
        client = Client(settings.model_copy(update={"redis_url": None}), connect(settings, redis_url))
        stack.start_sim(DEMO_FAULTS, latency_s=0.3, jitter_s=0.2, seed=7)
        for _ in range(workers):
            stack.start_worker(concurrency=100)
        flower = _start_flower(stack)
        api = _start_api(stack)
        console.print(flower)
        console.print(api)
        _wait_for_workers(client, stack)
        before = read_counters(client.redis)
        ids = _submit_and_wait(client, stack, batch, timeout_s, as_json)
        summary = summarize(client, ids, before)
        client.close()
        if as_json:
            print(json.dumps(summary, sort_keys=True))
        else:
            print_summary(summary)
            console.print(flower)
            console.print(api)
        if keep_running:
            console.print("the stack keeps running; Ctrl-C stops everything")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
    return 0 if summary["lost"] == 0 else 1
