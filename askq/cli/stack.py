"""The stack commands of the askq CLI: `askq api`, `askq flower`, `askq sim`, `askq redis`, `askq up`, `askq demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from askq.cli.args import positive_int
from askq.config.logging import configure_logging, scrub
from askq.config.settings import SIM_PORT, Settings, load_settings
from askq.errors import ConfigError


def cmd_api(args: argparse.Namespace) -> int:
    from askq.producers.api import serve

    serve(load_settings(), host=args.host, port=args.port)
    return 0


def flower_argv(settings: Settings, port: int | None = None, address: str | None = None) -> list[str]:
    """Celery arguments for Flower: persistent state under var_dir, never without credentials."""
    user, password = settings.flower.user, settings.flower.password
    # Blank values are refused by the settings too; this guards settings built by hand.
    if not user or not user.strip() or password is None or not password.get_secret_value().strip():
        raise ConfigError(
            "refusing to start Flower without credentials: set ASKQ_FLOWER__USER and ASKQ_FLOWER__PASSWORD"
        )
    db = (settings.var_dir / "flower" / "flower.db").resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return [
        "flower",
        f"--port={port or settings.flower.port}",
        f"--address={address or settings.flower.address}",
        "--persistent=True",
        f"--db={db}",
        "--state_save_interval=60000",
        "--purge_offline_workers=3600",
        # tornado would add its own log handler; Flower's lines go through askq's logging instead.
        "--logging=none",
    ]


def cmd_flower(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    argv = flower_argv(settings, args.port, args.address)
    assert settings.flower.password is not None  # checked by flower_argv
    # Credentials travel in Flower's environment, not argv, so `ps` does not show the password.
    os.environ["FLOWER_BASIC_AUTH"] = f"{settings.flower.user}:{settings.flower.password.get_secret_value()}"
    from askq.broker.monitor import watch_only
    from askq.workers import app

    watch_only(app)  # Flower's Broker page needs a plain redis:// URL (askq/broker/monitor.py)
    print(json.dumps({"flower": f"http://{args.address or settings.flower.address}:{args.port or settings.flower.port}",
                      "user": settings.flower.user}))
    app.start(argv)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from askq.sim.server import main as sim_main

    return sim_main(args.sim_args)


def cmd_redis(args: argparse.Namespace) -> int:
    from askq.core.redisserver import ensure_url, stop_detached

    settings = load_settings()
    if args.redis_command == "stop":
        stopped, said = stop_detached(settings.var_dir)
        print(said)
        # Refusing to signal a process that is not provably the server is a failure to stop.
        return 0 if stopped or said == "no embedded redis running" else 1
    if settings.redis_url is not None:
        # Configured: that is the Redis every askq process here uses; starting an embedded one
        # beside it would only mislead. The password stays hidden.
        print(scrub(settings.redis_url.get_secret_value()))
        print("askq: ASKQ_REDIS_URL is set: askq uses that Redis, not an embedded one", file=sys.stderr)
        return 0
    print(ensure_url(None, settings.var_dir))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from askq.demo import run_demo

    return run_demo(jobs=args.jobs, as_json=args.json, workers=args.workers, keep_running=args.keep_running)


def add_api(sub: Any) -> None:
    """`askq api`."""
    p = sub.add_parser("api", help="serve the HTTP API (uvicorn)")
    p.add_argument("--host", help="address to listen on (default: api.host)")
    p.add_argument("--port", type=int, help="port (default: api.port)")
    p.set_defaults(func=cmd_api)


def add_flower(sub: Any) -> None:
    """`askq flower`."""
    p = sub.add_parser("flower", help="run Flower against the broker (basic auth required, state under var/)")
    p.add_argument("--port", type=int, help="port (default: flower.port)")
    p.add_argument("--address", help="address to listen on (default: flower.address)")
    p.set_defaults(func=cmd_flower)


def add_sim(sub: Any) -> None:
    """`askq sim` (its options go on to the simulator)."""
    p = sub.add_parser("sim", help="run the OpenAI-compatible LLM simulator", add_help=False)
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_sim)


def add_redis(sub: Any) -> None:
    """`askq redis url | stop`."""
    p = sub.add_parser("redis", help="the embedded Redis: print its URL (starting it) or stop it")
    p.add_argument("redis_command", choices=["url", "stop"])
    p.set_defaults(func=cmd_redis)


def cmd_up(args: argparse.Namespace) -> int:
    from askq.up import run_up

    return run_up(sim_port=args.sim_port)


def add_up(sub: Any) -> None:
    """`askq up`."""
    p = sub.add_parser("up", help="run the whole local stack in the foreground (embedded Redis, simulator, a worker, "
                                  "API, Flower); Ctrl-C stops it")
    p.add_argument("--sim-port", type=positive_int, default=SIM_PORT,
                   help=f"the simulator's port (default {SIM_PORT}, where the default providers look for it)")
    p.set_defaults(func=cmd_up)


def add_demo(sub: Any) -> None:
    """`askq demo`."""
    p = sub.add_parser("demo", help="run the whole stack on embedded defaults and answer a batch of questions")
    p.add_argument("--jobs", type=positive_int, default=200, help="questions to answer (default 200)")
    p.add_argument("--workers", type=positive_int, default=2, help="worker processes (default 2)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--keep-running", action="store_true", help="keep the stack (and Flower) up after the summary")
    p.set_defaults(func=cmd_demo)
