"""The producer and operator commands of the askq CLI: submit, status, wait, dlq, stats, workers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from core import keys
from core.errors import InvalidJobError
from core.job import SUBMIT_FIELDS, DeadReason, JobView
from core.liveness import list_workers
from core.stats import read_counters
from producers.client import Client
from producers.report import jobs_table, providers_table

console = Console(stderr=True)


def _print_view(view: JobView) -> None:
    print(view.model_dump_json(indent=2))


def read_jobs_file(path: Path) -> list[dict[str, Any]]:
    """Jobs from a JSONL file (one object with at least "question" per line), checked line by line."""
    jobs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InvalidJobError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not isinstance(item, dict) or "question" not in item:
            raise InvalidJobError(f'{path}:{number}: expected an object with a "question" field')
        extra = set(item) - set(SUBMIT_FIELDS)
        if extra:
            raise InvalidJobError(
                f"{path}:{number}: unknown field(s) {sorted(extra)}; allowed: {sorted(SUBMIT_FIELDS)}"
            )
        jobs.append(item)
    return jobs


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, refused with a message that says so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    """The --metadata JSON object, or InvalidJobError saying what is wrong with the text."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidJobError(f"--metadata: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise InvalidJobError(f"--metadata: expected a JSON object such as '{{\"team\": \"billing\"}}', got {kind}")
    return value


def cmd_submit(args: argparse.Namespace) -> int:
    metadata = parse_metadata(args.metadata)  # checked before anything connects
    client = Client()
    if args.file:
        jobs = read_jobs_file(Path(args.file))
        ids: list[str] = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("submitting", total=len(jobs))
            for start in range(0, len(jobs), 500):
                ids += client.submit_many(jobs[start : start + 500], derive_key=args.derive_key)
                progress.update(task, advance=len(jobs[start : start + 500]))
        for job_id in ids:
            print(job_id)
        console.print(f"submitted {len(ids)} jobs")
        return 0
    if not args.question:
        raise InvalidJobError('give a question, or --file questions.jsonl')
    job_id = client.submit(args.question, context=args.context, idempotency_key=args.key,
                           metadata=metadata, derive_key=args.derive_key)
    print(job_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _print_view(Client().get(args.job_id))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    client = Client()
    ids = list(args.job_ids)
    if args.file:
        source = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115 - closed below
        with source:
            ids += [line.strip() for line in source if line.strip()]
    if not ids:
        raise InvalidJobError("give job ids, or --file FILE (one id per line; - for stdin)")
    if len(ids) == 1:
        view = client.wait(ids[0], timeout=args.timeout)
        _print_view(view)
        return 0 if view.state == "succeeded" else 1
    views = _wait_many(client, ids, args.timeout)
    for job_id in ids:
        print(views[job_id].model_dump_json() if job_id in views else json.dumps({"id": job_id, "state": "unknown"}))
    return 0 if all(v.state == "succeeded" for v in views.values()) and len(views) == len(ids) else 1


def _wait_many(client: Client, ids: list[str], timeout: float) -> dict[str, JobView]:
    """Poll many jobs with a progress bar until all are terminal or the timeout passes."""
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("waiting", total=len(ids))
        return client.wait_many(ids, timeout, lambda done: progress.update(task, completed=done))


def _asked_at(client: Client) -> float:
    """When the operator ran this command, on Redis's clock: its start, not the moment it got
    round to replaying, so a job that died again while the command started is not replayed
    twice. The time since start is measured on this host's clock, so its offset cancels out."""
    started = psutil.Process().create_time()
    return client.dlq.server_time() - max(0.0, time.time() - started)


def cmd_dlq(args: argparse.Namespace) -> int:
    client = Client()
    reason = DeadReason(args.reason) if getattr(args, "reason", None) else None
    if args.dlq_command == "list":
        since = time.time() - args.since if args.since is not None else None
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
    pipe.llen(client.settings.queue)
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


def register(sub: Any) -> None:
    """Add the producer and operator commands to the askq argument parser."""
    p = sub.add_parser("submit", help="enqueue a question (or a JSONL file of them)")
    p.add_argument("question", nargs="?")
    p.add_argument("--file", help="JSONL file: one {\"question\": ..., \"context\": [...]} per line")
    p.add_argument("--context", action="append", help="a context document (repeatable)")
    p.add_argument("--key", help="idempotency key: the same key always gives the same job")
    p.add_argument("--derive-key", action="store_true", help="derive the idempotency key from the content")
    p.add_argument("--metadata", metavar="JSON",
                   help='JSON object of metadata, e.g. \'{"team": "billing"}\'')
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="show a job")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("wait", help="wait for jobs to finish and show them (a progress bar for many)")
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    p.add_argument("--file", help="file of job ids, one per line (- for stdin), e.g. the output of submit --file")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("dlq", help="dead-letter queue: list, show, replay, purge")
    dsub = p.add_subparsers(dest="dlq_command", required=True)
    reasons = [r.value for r in DeadReason]
    one_of = "one of " + ", ".join(reasons)
    q = dsub.add_parser("list", help="list dead letters, newest first")
    q.add_argument("--reason", choices=reasons, metavar="REASON", help=f"only dead letters with this reason ({one_of})")
    q.add_argument("--since", type=float, metavar="SECONDS", help="only records from the last SECONDS seconds")
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
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("stats", help="counters: attempts, retries, fallbacks, breaker, cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("workers", help="every worker with its heartbeat age and state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workers)
