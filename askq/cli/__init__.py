"""The `askq` command: the parser, assembled from one module per area, and its error handling.

Areas: `jobs` (submit, cancel, status, wait), `deadletters` (dlq), `workers` (stats, workers,
health, worker), `stack` (api, flower, sim, redis, up, demo), `bench` (bench, chaos). A command is a
`cmd_*` function and an `add_*` function in its area's module, listed in COMMANDS below.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import redis

from askq.cli import bench, deadletters, jobs, stack, workers
from askq.cli.args import redis_problem
from askq.errors import AskqError

# Every command's parser, in the order `askq --help` lists them.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    jobs.add_submit, jobs.add_cancel, jobs.add_status, jobs.add_wait,
    deadletters.add_dlq,
    workers.add_stats, workers.add_workers,
    stack.add_api, workers.add_health, stack.add_flower,
    workers.add_worker,
    stack.add_sim, stack.add_redis, stack.add_up, stack.add_demo,
    bench.add_bench, bench.add_chaos,
)


def build_parser() -> argparse.ArgumentParser:
    from askq import __version__

    parser = argparse.ArgumentParser(prog="askq", description="A resilient LLM job queue.")
    parser.add_argument("--version", action="version", version=f"askq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
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
    except redis.RedisError as exc:  # the environment's fault, whichever command met it
        print(f"askq: error: {redis_problem(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
