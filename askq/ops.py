"""The operator commands of the askq CLI: `askq api`, `askq health`, `askq flower`."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.table import Table

from askq.config.settings import Settings, load_settings
from askq.core.errors import ConfigError

_COLOURS = {"healthy": "green", "warning": "yellow", "critical": "red", "info": "cyan"}


def cmd_api(args: argparse.Namespace) -> int:
    from askq.producers.api import serve

    serve(load_settings(), host=args.host, port=args.port)
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Print the verdict over the window; the exit code is 0 healthy, 1 warning, 2 critical."""
    from askq.core.connection import connect
    from askq.core.health import check_health

    settings = load_settings()
    client = connect(settings)
    health = check_health(client, args.window or settings.health.window_s)
    client.close()
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
    ]


def cmd_flower(args: argparse.Namespace) -> int:
    settings = load_settings()
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


def register(sub: Any) -> None:
    """Add the operator commands to the askq argument parser."""
    p = sub.add_parser("api", help="serve the HTTP API (uvicorn)")
    p.add_argument("--host", help="address to listen on (default: api.host)")
    p.add_argument("--port", type=int, help="port (default: api.port)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("health", help="health verdict over a sliding window; exit 0 healthy, 1 warning, 2 critical")
    p.add_argument("--window", type=float, help="seconds to look back (default: health.window_s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("flower", help="run Flower against the broker (basic auth required, state under var/)")
    p.add_argument("--port", type=int, help="port (default: flower.port)")
    p.add_argument("--address", help="address to listen on (default: flower.address)")
    p.set_defaults(func=cmd_flower)
