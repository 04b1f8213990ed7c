"""The worker commands of the askq CLI: `askq worker`, `askq workers`, `askq health`, `askq stats`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from askq.broker.queues import queue_depth
from askq.cli.args import positive_int, redis_errors, redis_problem
from askq.config.logging import configure_logging
from askq.config.settings import load_settings
from askq.core import keys
from askq.core.health import Level
from askq.core.liveness import list_workers
from askq.core.stats import read_counters
from askq.errors import AskqError
from askq.producers.client import Client
from askq.producers.report import jobs_table, providers_table

_COLOURS = {"healthy": "green", "warning": "yellow", "critical": "red", "info": "cyan"}
# `askq health`'s exit code when there is no verdict (the monitoring-plugin convention's UNKNOWN).
UNKNOWN = 3


def cmd_worker(args: argparse.Namespace) -> int:
    if args.concurrency:
        # The worker's runtime reads its settings on its own (after Celery starts); the flag
        # must reach it, so the heartbeat reports and the loop sizes for the real concurrency.
        os.environ["ASKQ_WORKER_CONCURRENCY"] = str(args.concurrency)
    settings = load_settings()
    # Before Celery starts: its first lines (a warning about running as root) come out formatted too.
    configure_logging(settings.log_level, settings.log_json)
    from askq.workers import app

    # Celery's banner is a block of text on stdout; with JSON logs, worker_started says the same.
    argv = ["--quiet"] if settings.log_json else []
    argv += [
        "worker",
        "--pool", args.pool,
        "--concurrency", str(settings.worker_concurrency),
        "--queues", settings.queue,
        "--loglevel", args.loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.name:
        argv += ["--hostname", f"{args.name}@%h"]
    app.worker_main(argv)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    client = Client()
    counters = read_counters(client.redis)
    if args.json:
        print(json.dumps(counters, sort_keys=True))
        return 0
    names = [p.name for p in client.settings.providers]
    pipe = client.redis.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.breaker(name), "state")
    queue_depth(pipe, client.settings.queue)
    *states, depth = pipe.execute()
    console_out = Console()
    console_out.print(jobs_table(counters, client.store.pending_count(), int(depth), client.dlq.count()))
    console_out.print(providers_table(counters, {n: str(s or "closed") for n, s in zip(names, states, strict=True)}))
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    client = Client()
    workers = list_workers(client.redis, client.settings)
    if args.json:
        print(json.dumps([w.model_dump() for w in workers]))
        return 0
    table = Table("worker", "state", "heartbeat age (s)", "in flight", "completed", "oldest job (s)")
    for w in workers:
        table.add_row(w.name, w.state, f"{w.heartbeat_age_s:.1f}", str(w.inflight), str(w.completed),
                      f"{w.oldest_job_s:.1f}")
    Console().print(table)
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Print the verdict over the window; the exit code is 0 healthy, 1 warning, 2 critical, 3 unknown
    (no verdict: Redis unreachable, or the settings wrong). With --probe: 1 for critical or unknown, else 0."""
    code = _health(args)
    return (1 if code >= Level.CRITICAL else 0) if args.probe else code


def _health(args: argparse.Namespace) -> int:
    from askq.core.connection import connect
    from askq.core.health import check_health

    try:
        settings = load_settings()
        client = connect(settings)
        try:
            health = check_health(client, args.window or settings.health.window_s)
        finally:
            client.close()
    except (AskqError, redis.RedisError) as exc:
        problem = redis_problem(exc) if isinstance(exc, redis.RedisError) else str(exc)
        if args.json:
            print(json.dumps({"status": "unknown", "error": problem}))
        print(f"askq: error: {problem}", file=sys.stderr)
        return UNKNOWN
    if args.json:
        print(health.model_dump_json())
        return health.exit_code
    table = Table("check", "value", "status", "thresholds",
                  title=f"askq health over {health.window_s:g}s: {health.jobs} jobs, {health.calls} calls")
    for check in health.checks:
        value = "-" if check.value is None else f"{check.value:g}{check.unit}"
        table.add_row(check.name, value, f"[{_COLOURS[check.status]}]{check.status}[/]", check.thresholds)
    console = Console()
    console.print(table)
    console.print(f"[bold {_COLOURS[health.status]}]{health.status}[/]")
    return health.exit_code


def add_stats(sub: Any) -> None:
    """`askq stats`."""
    p = sub.add_parser("stats", help="counters: attempts, retries, fallbacks, breaker, cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=redis_errors(cmd_stats))


def add_workers(sub: Any) -> None:
    """`askq workers`."""
    p = sub.add_parser("workers", help="every worker with its heartbeat age and state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=redis_errors(cmd_workers))


def add_health(sub: Any) -> None:
    """`askq health`."""
    p = sub.add_parser("health", help="health verdict over a sliding window; exit 0 healthy, 1 warning, 2 critical, "
                                      "3 unknown (Redis unreachable)")
    p.add_argument("--window", type=float, help="seconds to look back (default: health.window_s)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--probe", action="store_true",
                   help="for container health checks: exit 1 when critical or unknown, else 0 (a warning passes)")
    p.set_defaults(func=cmd_health)


def add_worker(sub: Any) -> None:
    """`askq worker`."""
    p = sub.add_parser("worker", help="run a Celery worker (thread pool on a shared asyncio loop)")
    p.add_argument("--concurrency", type=positive_int, default=None,
                   help="jobs in flight (default: worker_concurrency)")
    p.add_argument("--pool", default="threads", choices=["threads", "solo"])
    p.add_argument("--name", help="worker name (Celery hostname prefix)")
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(func=cmd_worker)
