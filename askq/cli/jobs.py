"""The job commands of the askq CLI: submit, status, wait, cancel."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.progress import Progress

from askq.cli.args import redis_errors
from askq.config.settings import load_settings
from askq.core import keys
from askq.core.job import JobSpec, JobView, parse_where, request_data
from askq.core.liveness import list_workers
from askq.core.stats import read_health_window
from askq.errors import AskqError, InvalidJobError, JobNotFoundError
from askq.producers.client import Client, prepare_job
from askq.producers.jobsfile import MAX_FILE_BYTES, decode_utf8, load_jobs_file, load_json, read_file

console = Console(stderr=True)


def _print_view(view: JobView) -> None:
    print(view.model_dump_json(indent=2))


# What to do when no provider answers, said with every warning about it.
PROVIDER_HINT = ("Is a provider reachable? Check ASKQ_PROVIDERS (locally: run the simulator, `askq sim --port 8700`, "
                 "or everything with `askq up`); `askq stats` shows each provider's errors")


def warn(message: str) -> None:
    """One warning line on stderr (plain text: stdout carries ids and views)."""
    print(f"askq: warning: {message}", file=sys.stderr)


def warn_degraded(views: list[JobView]) -> None:
    """Say so when answers came from the cache or default tier: no provider answered them."""
    degraded = [v for v in views if v.result is not None and v.result.degraded]
    if not degraded:
        return
    tiers = Counter(v.result.source for v in degraded if v.result is not None)
    if len(views) == 1:
        what = "the canned default answer" if "default" in tiers else "an earlier answer from the cache"
        warn(f"job {degraded[0].id} got {what} (degraded): no provider answered it. {PROVIDER_HINT}")
        return
    which = ", ".join(f"{tier} {count}" for tier, count in sorted(tiers.items()))
    warn(f"{len(degraded)} of {len(views)} jobs got a degraded answer ({which}): no provider answered them. "
         f"{PROVIDER_HINT}")


def warn_about_the_cluster(client: Client) -> None:
    """After a submission: say so when nothing will answer it, or only the default tier will."""
    settings = client.settings
    try:
        alive = any(w.state == "alive" for w in list_workers(client.redis, settings))
        window = read_health_window(client.redis, settings.health.window_s)
        names = [p.name for p in settings.providers]
        states = [client.redis.hget(keys.breaker(name), "state") for name in names]
    except redis.RedisError:
        return  # the jobs are in; the warnings are a courtesy
    if not alive:
        warn("no askq worker is running: the job waits on the queue until one starts (`askq worker`)")
    finished = window.get("jobs", 0.0)
    if finished and window.get("succeeded", 0.0) - window.get("degraded", 0.0) <= 0:
        warn(f"none of the {finished:g} jobs that ended in the last {settings.health.window_s:g} s was answered "
             f"by a provider (only cached or default answers, or dead letters). {PROVIDER_HINT}")
    elif all(state == "open" for state in states):
        warn(f"the circuit breaker of every provider ({', '.join(names)}) is open: the job will get a degraded "
             f"answer unless one recovers. {PROVIDER_HINT}")


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


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
    client = Client(settings)
    client.store.submit(spec)
    print(spec.id)
    warn_about_the_cluster(client)
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
    warn_about_the_cluster(client)
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
    view = Client().get(args.job_id)
    _print_view(view)
    warn_degraded([view])
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
        warn_degraded([view])
        return 0 if view.state == "succeeded" else 1
    views = _wait_many(client, ids, args.timeout)
    for job_id in ids:
        print(views[job_id].model_dump_json() if job_id in views else json.dumps({"id": job_id, "state": "unknown"}))
    warn_degraded(list(views.values()))
    return 0 if all(v.state == "succeeded" for v in views.values()) and len(views) == len(ids) else 1


def _wait_many(client: Client, ids: list[str], timeout: float) -> dict[str, JobView]:
    """Poll many jobs with a progress bar until all are terminal or the timeout passes."""
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("waiting", total=len(ids))
        return client.wait_many(ids, timeout, lambda done: progress.update(task, completed=done))


def add_submit(sub: Any) -> None:
    """`askq submit`."""
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
    p.set_defaults(func=redis_errors(cmd_submit))


def add_cancel(sub: Any) -> None:
    """`askq cancel`."""
    p = sub.add_parser("cancel", help="cancel jobs: by id, or every unfinished job whose metadata matches --where")
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="metadata to match (repeatable: all must match); VALUE is a number, true, false or "
                        "null when it reads as one, else text (\"123\" in quotes for the text)")
    p.set_defaults(func=redis_errors(cmd_cancel))


def add_status(sub: Any) -> None:
    """`askq status`."""
    p = sub.add_parser("status", help="show a job")
    p.add_argument("job_id")
    p.set_defaults(func=redis_errors(cmd_status))


def add_wait(sub: Any) -> None:
    """`askq wait`."""
    p = sub.add_parser("wait", help="wait for jobs to finish and show them (a progress bar for many)")
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    p.add_argument("--file", help="file of job ids, one per line (- for stdin), e.g. the output of submit --file")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=redis_errors(cmd_wait))
