"""The `askq` command: producer and operator commands, plus worker, sim, redis and demo."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from askq.core.errors import AskqError


def cmd_worker(args: argparse.Namespace) -> int:
    from askq.config.settings import load_settings

    if args.concurrency:
        # The worker's runtime reads its settings on its own (after Celery starts); the flag
        # must reach it, so the heartbeat reports and the loop sizes for the real concurrency.
        os.environ["ASKQ_WORKER_CONCURRENCY"] = str(args.concurrency)
    settings = load_settings()
    from askq.workers import app

    argv = [
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


def cmd_sim(args: argparse.Namespace) -> int:
    from askq.sim.server import main as sim_main

    return sim_main(args.sim_args)


def cmd_redis(args: argparse.Namespace) -> int:
    from askq.config.settings import load_settings
    from askq.core.redisserver import ensure_url, stop_detached

    settings = load_settings()
    if args.redis_command == "stop":
        stopped, said = stop_detached(settings.var_dir)
        print(said)
        # Refusing to signal a process that is not provably the server is a failure to stop.
        return 0 if stopped or said == "no embedded redis running" else 1
    print(ensure_url(None, settings.var_dir))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from askq.demo import run_demo

    return run_demo(jobs=args.jobs, as_json=args.json, workers=args.workers, keep_running=args.keep_running)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.longpoll:
        from askq.bench.longpoll import run_longpoll

        return run_longpoll(callers=args.callers, wait_s=args.wait, as_json=args.json)
    if args.pools:
        from askq.bench.pools import compare_pools

        return compare_pools(jobs=args.jobs, latency_s=args.latency, concurrency=args.concurrency,
                             workers=args.workers, as_json=args.json)
    from askq.bench.run import run_bench

    return run_bench(jobs=args.jobs, latency_s=args.latency, concurrency=args.concurrency, workers=args.workers,
                     textbook_jobs=args.textbook_jobs, skip_baselines=args.skip_baselines,
                     submit_only=args.submit_only, plot=args.plot, as_json=args.json, durability=args.durability)


def cmd_chaos(args: argparse.Namespace) -> int:
    from askq.bench.chaos import parse_phases, run_chaos

    if args.hosts:  # many hosts in network namespaces (askq/bench/hosts.py)
        from askq.bench.hosts import HostsOptions, run_hosts_command
        from askq.config.settings import load_settings

        opts = HostsOptions(jobs=args.jobs or 60, partition_s=args.partition, deadline_s=args.deadline)
        return run_hosts_command(opts, load_settings().var_dir / "chaos-hosts", args.json)

    try:
        chosen = parse_phases(args.phases, args.skip)
    except ValueError as exc:
        print(f"askq chaos: {exc}", file=sys.stderr)
        return 2
    return run_chaos(jobs=args.jobs or 5000, deadline_s=args.deadline, as_json=args.json, phase_names=chosen,
                     redis_freeze_s=args.redis_freeze, worker_freeze_s=args.worker_freeze)


def positive_float(text: str) -> float:
    """An argparse type for a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from askq import __version__
    from askq.producers.cli import positive_int
    from askq.producers.cli import register as register_producers

    parser = argparse.ArgumentParser(prog="askq", description="A resilient LLM job queue.")
    parser.add_argument("--version", action="version", version=f"askq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    register_producers(sub)
    from askq.ops import register as register_ops

    register_ops(sub)

    p = sub.add_parser("worker", help="run a Celery worker (thread pool on a shared asyncio loop)")
    p.add_argument("--concurrency", type=positive_int, default=None,
                   help="jobs in flight (default: worker_concurrency)")
    p.add_argument("--pool", default="threads", choices=["threads", "solo"])
    p.add_argument("--name", help="worker name (Celery hostname prefix)")
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("sim", help="run the OpenAI-compatible LLM simulator", add_help=False)
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("redis", help="the embedded Redis: print its URL (starting it) or stop it")
    p.add_argument("redis_command", choices=["url", "stop"])
    p.set_defaults(func=cmd_redis)

    p = sub.add_parser("demo", help="run the whole stack on embedded defaults and answer a batch of questions")
    p.add_argument("--jobs", type=positive_int, default=200, help="questions to answer (default 200)")
    p.add_argument("--workers", type=positive_int, default=2, help="worker processes (default 2)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--keep-running", action="store_true", help="keep the stack (and Flower) up after the summary")
    p.set_defaults(func=cmd_demo)

    from pathlib import Path

    p = sub.add_parser("bench", help="measure askq against the textbook and the bare Celery worker")
    p.add_argument("--jobs", type=positive_int, default=3000, help="jobs per timed run (default 3000)")
    p.add_argument("--latency", type=float, default=1.0, help="simulator latency per call, seconds")
    p.add_argument("--concurrency", type=positive_int, default=200, help="jobs in flight per worker process")
    p.add_argument("--workers", type=positive_int, default=2, help="worker processes (askq and the bare baseline)")
    p.add_argument("--textbook-jobs", type=positive_int, default=40, help="jobs for the slow textbook baseline")
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--submit-only", action="store_true", help="only producer jobs/s, one by one and bulk")
    p.add_argument("--durability", choices=("relaxed", "strict"), default="relaxed",
                   help="with --submit-only: submit in this durability mode (README: Durable submit)")
    p.add_argument("--pools", action="store_true", help="the bare task on the thread pool and on gevent, twice each")
    p.add_argument("--longpoll", action="store_true",
                   help="HTTP API: --callers concurrent long-polls of --wait s, and /healthz meanwhile")
    p.add_argument("--callers", type=positive_int, default=2000, help="long-polling callers (default 2000)")
    p.add_argument("--wait", type=float, default=15.0, help="each long-poll's wait, seconds (default 15)")
    p.add_argument("--plot", type=Path, help="also sweep concurrency and draw a PNG here")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("chaos", help="kill, freeze and restart things under load; check nothing is lost")
    p.add_argument("--jobs", type=positive_int, help="jobs to push through the chaos (default 5000; 60 with --hosts)")
    p.add_argument("--deadline", type=positive_float, default=900.0,
                   help="stop after this many seconds whatever happens")
    p.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    p.add_argument("--phases", help="comma list of phases to run (default all: mix, redis_freeze, late_worker, "
                   "slow_provider, burst)")
    p.add_argument("--skip", help="comma list of phases to leave out")
    p.add_argument("--hosts", action="store_true", help="instead: Redis, two worker hosts and a producer in network "
                   "namespaces; a 30 s partition, and clocks 30 s ahead and behind (needs root)")
    p.add_argument("--partition", type=positive_float, default=30.0,
                   help="with --hosts: seconds worker host a is cut off (default 30)")
    p.add_argument("--redis-freeze", type=positive_float, default=15.0, help="seconds Redis stays frozen (default 15)")
    p.add_argument("--worker-freeze", type=positive_float, default=25.0,
                   help="seconds the late worker stays frozen (default 25)")
    p.set_defaults(func=cmd_chaos)
    return parser


def parse_command(argv: list[str] | None = None) -> Any:
    """Parse askq arguments; `askq sim` hands its own options (--port ...) on to the simulator."""
    parser = build_parser()
    # argparse's REMAINDER does not take options that come first, so the simulator's are collected here.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "sim":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.sim_args = [*extra, *args.sim_args]
    return args


def main(argv: list[str] | None = None) -> int:
    args: Any = parse_command(argv)
    try:
        return int(args.func(args))
    except AskqError as exc:
        print(f"askq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
