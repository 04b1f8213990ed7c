"""The producer and operator commands of the askq CLI: submit, status, wait, dlq, stats, workers."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from askq.config.settings import Settings, load_settings
from askq.core import keys
from askq.core.errors import AskqError, InvalidJobError, JobNotFoundError
from askq.core.job import DeadReason, JobSpec, JobView, parse_where, request_data
from askq.core.liveness import list_workers
from askq.core.stats import read_counters
from askq.producers.client import Client, batch_error, check_jobs, prepare_job
from askq.producers.report import jobs_table, providers_table

console = Console(stderr=True)


def _print_view(view: JobView) -> None:
    print(view.model_dump_json(indent=2))


# A jobs file is read whole and every line checked before the first job is enqueued (all or
# nothing). The caps bound what that holds in memory: measured peaks are about 2.5 KiB per job
# plus 3.5x the file's size, so ~300 MiB at either cap.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_FILE_JOBS = 100_000


def read_file(path: Path, limit: int = MAX_FILE_BYTES, note: str = "") -> bytes:
    """A file's bytes, or InvalidJobError in one line: missing, unreadable, a directory, too big."""
    try:
        with path.open("rb") as source:
            data = source.read(limit + 1)
    except OSError as exc:
        raise InvalidJobError(f"{path}: cannot read it ({exc.strerror or exc}){note}") from None
    if len(data) > limit:
        raise InvalidJobError(f"{path}: larger than the limit of {limit:,} bytes; split it into smaller files{note}")
    return data


def decode_utf8(path: Path, data: bytes, note: str = "") -> str:
    """The text of a UTF-8 file (a leading BOM allowed); else one line naming the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidJobError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at byte column "
                              f"{column}); save the file as UTF-8{note}") from None


def _no_duplicate_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        twice = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"field(s) {twice!a} given twice")
    return fields


def load_json(text: str) -> Any:
    """JSON as a job's fields: ValueError also for a field given twice or nesting too deep to parse."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_fields)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_jsonl(path: Path, max_jobs: int = MAX_FILE_JOBS) -> tuple[list[int], list[Any], list[tuple[int, str]]]:
    """Line numbers and values of a JSONL file's non-blank lines, and "line N: problem" for each bad one."""
    nothing = "; nothing was enqueued"
    text = decode_utf8(path, read_file(path, note=nothing), note=nothing)
    # split("\n"), not splitlines(): U+2028, U+0085 and friends are legal inside a JSON string.
    lines = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if len(lines) > max_jobs:
        raise InvalidJobError(f"{path}: {len(lines):,} jobs, the limit is {max_jobs:,} per file; split it into "
                              f"smaller files{nothing}")
    del text
    numbers: list[int] = []
    items: list[Any] = []
    problems: list[tuple[int, str]] = []
    for number, line in lines:
        try:
            items.append(load_json(line))
            numbers.append(number)
        except ValueError as exc:
            problems.append((number, f"line {number}: not valid JSON ({exc})"))
    return numbers, items, problems


def _check_file(path: Path, settings: Settings | None, derive_key: bool) -> tuple[list[int], list[Any], list[JobSpec]]:
    """Line numbers, parsed lines and specs of a JSONL file, or one InvalidJobError naming every bad line."""
    numbers, items, problems = parse_jsonl(path)
    specs, bad = check_jobs(items, numbers, settings, derive_key, from_json=True, noun="line")
    if problems or bad:
        raise batch_error([text for _, text in sorted(problems + bad)], "line", where=f"{path}: ")
    return numbers, items, specs


def load_jobs_file(path: Path, settings: Settings | None = None,
                   derive_key: bool = False) -> tuple[list[int], list[JobSpec]]:
    """Every job of a JSONL file, checked whole: line numbers and specs, or one InvalidJobError that
    names every bad line (the first MAX_LISTED, then a count) and says nothing was enqueued."""
    numbers, _, specs = _check_file(path, settings, derive_key)
    return numbers, specs


def read_jobs_file(path: Path) -> list[dict[str, Any]]:
    """Jobs from a JSONL file (one object with at least "question" per line), every line checked."""
    return _check_file(path, None, False)[1]


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
        value = load_json(text)
    except ValueError as exc:
        raise InvalidJobError(f"--metadata: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise InvalidJobError(f"--metadata: expected a JSON object such as '{{\"team\": \"billing\"}}', got {kind}")
    return value


def cmd_submit(args: argparse.Namespace) -> int:
    metadata = parse_metadata(args.metadata)  # checked before anything connects
    if args.file:
        given = [name for name, value in (("a question", args.question), ("--context", args.context),
                                          ("--key", args.key), ("--metadata", args.metadata),
                                          ("--callback-url", args.callback_url), ("--ttl", args.ttl),
                                          ("--expires-at", args.expires_at)) if value is not None]
        if given:
            raise InvalidJobError(f"--file takes no {', '.join(given)}: put them in the file's lines")
        return _submit_file(Path(args.file), args.derive_key)
    if not args.question:
        raise InvalidJobError('give a question, or --file questions.jsonl')
    settings = load_settings()
    # Checked whole before anything connects (or starts the embedded Redis).
    spec = prepare_job(request_data(args.question, args.context, args.key, metadata, args.callback_url,
                                    args.expires_at, args.ttl), settings, args.derive_key)
    Client(settings).store.submit(spec)
    print(spec.id)
    return 0


def _submit_file(path: Path, derive_key: bool, chunk: int = 500) -> int:
    """Check the whole file, then enqueue it in pipelined chunks, printing each chunk's ids once it is in."""
    settings = load_settings()
    numbers, specs = load_jobs_file(path, settings, derive_key)  # before anything connects
    client = Client(settings)
    done = 0
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("submitting", total=len(specs))
        try:
            for start in range(0, len(specs), chunk):
                client.store.submit_many(specs[start : start + chunk])
                done = min(start + chunk, len(specs))
                print("\n".join(spec.id for spec in specs[start:done]), flush=True)
                progress.update(task, completed=done)
        except redis.RedisError as exc:
            raise AskqError(_stopped(path, numbers, specs, done, chunk, exc)) from None
    console.print(f"submitted {len(specs)} jobs")
    return 0


def _stopped(path: Path, numbers: list[int], specs: list[JobSpec], done: int, chunk: int, exc: Exception) -> str:
    """What is known to be in after Redis failed mid-file, and how to go on without running a job twice."""
    through = f"through line {numbers[done - 1]}; their ids are on stdout" if done else "none yet"
    in_flight = min(chunk, len(specs) - done)
    if all(spec.idempotency_key for spec in specs):
        advice = "Submit the same file again: the jobs already in keep their ids and are not enqueued twice"
    else:
        which = f"the lines after line {numbers[done - 1]}" if done else "the file"
        advice = (f"Submit {which} again; up to {in_flight} of those jobs may then run twice (with --derive-key "
                  "or idempotency keys, resubmitting the whole file is safe)")
    return (f"{path}: Redis failed after {done} of {len(specs)} jobs were enqueued ({through}); the next "
            f"{in_flight} may be in too: {type(exc).__name__}: {exc}. {advice}")


def parse_where_args(pairs: list[str]) -> dict[str, Any]:
    """--where KEY=VALUE pairs as a metadata match: VALUE is read as JSON when it is a number,
    true, false or null (quote it, "123", to match the text), else taken as text."""
    where: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidJobError(f"--where: expected KEY=VALUE, e.g. team=billing, got {pair!r}")
        try:
            value = load_json(text)
        except ValueError:
            value = text
        if isinstance(value, list | dict):
            value = text
        if key in where:
            raise InvalidJobError(f"--where: key {key!r} given twice")
        where[key] = value
    return parse_where(where)


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel jobs by id, or every unfinished job whose metadata matches --where; one line per job."""
    if bool(args.job_ids) == bool(args.where):
        raise InvalidJobError("give job ids, or --where KEY=VALUE (repeatable), not both")
    where = parse_where_args(args.where) if args.where else None  # checked before anything connects
    client = Client()
    if where is not None:
        outcomes = client.cancel_where(where)
    else:
        outcomes = {}
        for job_id in args.job_ids:
            try:
                outcomes[job_id] = client.cancel(job_id).value
            except JobNotFoundError:
                outcomes[job_id] = "not_found"
    for job_id, outcome in outcomes.items():
        print(f"{job_id}\t{outcome}")
    if where is not None:
        done = sum(1 for o in outcomes.values() if o == "cancelled")
        console.print(f"{len(outcomes)} jobs matched, {done} cancelled")
    return 0 if all(o in ("cancelled", "already_cancelled") for o in outcomes.values()) else 1


def cmd_status(args: argparse.Namespace) -> int:
    _print_view(Client().get(args.job_id))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    ids = list(args.job_ids)
    if args.file:
        if args.file == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise InvalidJobError(f"stdin: larger than the limit of {MAX_FILE_BYTES:,} bytes")
        else:
            data = read_file(Path(args.file))
        ids += [line.strip() for line in decode_utf8(Path(args.file), data).split("\n") if line.strip()]
    if not ids:
        raise InvalidJobError("give job ids, or --file FILE (one id per line; - for stdin)")
    client = Client()
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
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("waiting", total=len(ids))
        return client.wait_many(ids, timeout, lambda done: progress.update(task, completed=done))


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


def _redis_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command whose Redis failures are one line (exit 2), not a traceback: it is the environment's fault."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except redis.RedisError as exc:
            # redis-py names host and port in its messages, never the password.
            raise AskqError(f"Redis failed: {type(exc).__name__}: {exc}") from None

    return run


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
    p.add_argument("--callback-url", metavar="URL",
                   help="POST the job's view here, signed, once it ends (host in callbacks.allowed_hosts)")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--ttl", type=float, metavar="SECONDS",
                        help="not started within SECONDS of submission: never run, ends expired")
    expiry.add_argument("--expires-at", type=float, metavar="EPOCH",
                        help="not started by this time (epoch seconds): never run, ends expired")
    p.set_defaults(func=_redis_errors(cmd_submit))

    p = sub.add_parser("cancel", help="cancel jobs: by id, or every unfinished job whose metadata matches --where")
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="metadata to match (repeatable: all must match); VALUE is a number, true, false or "
                        "null when it reads as one, else text (\"123\" in quotes for the text)")
    p.set_defaults(func=_redis_errors(cmd_cancel))

    p = sub.add_parser("status", help="show a job")
    p.add_argument("job_id")
    p.set_defaults(func=_redis_errors(cmd_status))

    p = sub.add_parser("wait", help="wait for jobs to finish and show them (a progress bar for many)")
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    p.add_argument("--file", help="file of job ids, one per line (- for stdin), e.g. the output of submit --file")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=_redis_errors(cmd_wait))

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
    p.set_defaults(func=_redis_errors(cmd_dlq))

    p = sub.add_parser("stats", help="counters: attempts, retries, fallbacks, breaker, cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_redis_errors(cmd_stats))

    p = sub.add_parser("workers", help="every worker with its heartbeat age and state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_redis_errors(cmd_workers))
