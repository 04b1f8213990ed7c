"""The dead-letter commands of the askq CLI: `askq dlq list | show | replay | purge`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from askq.cli.args import positive_float, positive_int, redis_errors
from askq.core.deadletter import DeadReason
from askq.errors import InvalidJobError
from askq.producers.client import Client

console = Console(stderr=True)


def _asked_at(client: Client) -> float:
    """When the operator ran this command, on Redis's clock: its start, not the moment it got
    round to replaying, so a job that died again while the command started is not replayed
    twice. The time since start is measured on this host's clock, so its offset cancels out."""
    return client.dlq.server_time() - _seconds_since_start()


def _seconds_since_start() -> float:
    """How long this process has run. From the kernel's start tick and the boot clock, both
    counted from boot: psutil's create_time adds the boot time, which Linux gives in whole
    seconds, so it can put the start up to a second early (and a death just before this command
    would then look newer than the command)."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        return max(0.0, time.time() - psutil.Process().create_time())


def cmd_dlq(args: argparse.Namespace) -> int:
    client = Client()
    reason = DeadReason(args.reason) if getattr(args, "reason", None) else None
    if args.dlq_command == "list":
        since = client.dlq.server_time() - args.since if args.since is not None else None
        records = client.dead_letters(reason=reason, since=since, limit=args.limit)
        if args.json:
            print(json.dumps([r.model_dump(mode="json", exclude={"payload", "raw"}) for r in records]))
            return 0
        table = Table("reason", "dead at", "deliveries", "error")
        table.add_column("id", no_wrap=True)
        for r in records:
            table.add_row(r.reason.value, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.dead_at)),
                          str(r.deliveries), r.error[:80], r.id)
        Console().print(table)
        return 0
    if args.dlq_command == "show":
        print(client.dead_letter(args.id).model_dump_json(indent=2))
        return 0
    if args.dlq_command == "replay":
        asked_at = _asked_at(client)
        if args.id:
            outcomes = {args.id: client.dlq.replay(args.id, asked_at)}
        elif args.all or reason:
            outcomes = client.dlq.replay_many(reason, asked_at)
        else:
            raise InvalidJobError("give a dead-letter ID, --all or --reason R")
        for record_id, outcome in outcomes.items():
            print(f"{record_id}\t{outcome}")
        return 0
    if args.dlq_command == "purge":
        count = len(client.dead_letters(reason=reason, limit=client.settings.dlq_max_records))
        if not args.yes:
            # Anything but an explicit yes (no answer, end of input) keeps the records.
            console.print(f"purge {count} dead letters? [y/N] ", end="")
            try:
                answer = sys.stdin.readline()
            except (OSError, ValueError):
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                console.print("nothing purged")
                return 1
        print(client.purge_dead_letters(reason))
        return 0
    return 2


def add_dlq(sub: Any) -> None:
    """`askq dlq` and its subcommands."""
    p = sub.add_parser("dlq", help="dead-letter queue: list, show, replay, purge")
    dsub = p.add_subparsers(dest="dlq_command", required=True)
    reasons = [r.value for r in DeadReason]
    one_of = "one of " + ", ".join(reasons)
    q = dsub.add_parser("list", help="list dead letters, newest first")
    q.add_argument("--reason", choices=reasons, metavar="REASON", help=f"only dead letters with this reason ({one_of})")
    q.add_argument("--since", type=positive_float, metavar="SECONDS", help="only records from the last SECONDS seconds")
    q.add_argument("--limit", type=positive_int, default=100, help="show at most this many records (default 100)")
    q.add_argument("--json", action="store_true", help="print the records (without payloads) as JSON")
    q = dsub.add_parser("show", help="show one dead letter in full: error, deliveries and payload")
    q.add_argument("id", help="the dead letter's id (the job id, as `dlq list` shows it)")
    q = dsub.add_parser("replay", help="re-enqueue dead jobs; replaying a record twice runs it once, and a job "
                        "that died again after this command started is left dead (newer)")
    q.add_argument("id", nargs="?", help="the dead letter to replay (or use --all or --reason)")
    q.add_argument("--all", action="store_true", help="replay every dead letter")
    q.add_argument("--reason", choices=reasons, metavar="REASON",
                   help=f"replay every dead letter with this reason ({one_of})")
    q = dsub.add_parser("purge", help="delete dead letters for good (asks first unless --yes)")
    q.add_argument("--reason", choices=reasons, metavar="REASON",
                   help=f"purge only dead letters with this reason ({one_of})")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=redis_errors(cmd_dlq))
