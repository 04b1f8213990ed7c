"""The measuring commands of the askq CLI: `askq bench`, `askq chaos`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from askq.cli.args import positive_float, positive_int


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
                     submit_only=args.submit_only, plot=args.plot, as_json=args.json, rounds=args.rounds,
                     quick=args.quick, rates=args.rate, durability=args.durability)


def cmd_chaos(args: argparse.Namespace) -> int:
    if args.hosts:  # many hosts in network namespaces (askq/bench/hosts.py)
        from askq.bench.hosts import HostsOptions, run_hosts_command
        from askq.config.settings import load_settings

        opts = HostsOptions(jobs=args.jobs or 60, partition_s=args.partition, deadline_s=args.deadline)
        return run_hosts_command(opts, load_settings().var_dir / "chaos-hosts", args.json)

    from askq.bench.chaos import parse_phases, run_chaos

    try:
        chosen = parse_phases(args.phases, args.skip)
    except ValueError as exc:
        print(f"askq chaos: {exc}", file=sys.stderr)
        return 2
    return run_chaos(jobs=args.jobs or 5000, deadline_s=args.deadline, as_json=args.json, phase_names=chosen,
                     redis_freeze_s=args.redis_freeze, worker_freeze_s=args.worker_freeze)


def add_bench(sub: Any) -> None:
    """`askq bench`."""
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
    p.add_argument("--plot", type=Path, help="also sweep concurrency and draw a PNG here (and, with --rate, "
                   "latency against offered load beside it, <name>-latency.png)")
    p.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds of every design (default 3)")
    p.add_argument("--rate", action="append", metavar="R",
                   help="open loop: Poisson arrivals at R jobs/s, or R%% of the capacity measured in the same run "
                        "(repeatable: --rate 50%% --rate 80%%)")
    p.add_argument("--quick", action="store_true",
                   help="a few seconds, askq against bare and the floor; exit 1 if askq's CPU/job is over 2x bare's")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=cmd_bench)


def add_chaos(sub: Any) -> None:
    """`askq chaos`."""
    p = sub.add_parser("chaos", help="kill, freeze and restart things under load; check nothing is lost")
    p.add_argument("--jobs", type=positive_int, help="jobs to push through the chaos (default 5000; 60 with --hosts)")
    p.add_argument("--hosts", action="store_true", help="instead: Redis, two worker hosts and a producer in network "
                   "namespaces; a 30 s partition, and clocks 30 s ahead and behind (needs root)")
    p.add_argument("--partition", type=positive_float, default=30.0,
                   help="with --hosts: seconds worker host a is cut off (default 30)")
    p.add_argument("--deadline", type=positive_float, default=900.0,
                   help="stop after this many seconds whatever happens")
    p.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    p.add_argument("--phases", help="comma list of phases to run (default all: mix, redis_freeze, late_worker, "
                   "slow_provider, burst)")
    p.add_argument("--skip", help="comma list of phases to leave out")
    p.add_argument("--redis-freeze", type=positive_float, default=15.0, help="seconds Redis stays frozen (default 15)")
    p.add_argument("--worker-freeze", type=positive_float, default=25.0,
                   help="seconds the late worker stays frozen (default 25)")
    p.set_defaults(func=cmd_chaos)
