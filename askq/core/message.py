"""Celery protocol-2 messages for the answer task, built without a Celery app.

Producers, the reaper and dead-letter replay all put jobs on the queue through this one
function, so a message is JSON the same way everywhere and producers need no worker code.
The envelope is the one kombu's Redis transport stores in the queue list. parse_envelope()
is the other half: the check every entry on the task queue passes before kombu or Celery
reads it, so that askq's workers run only what build() could have written, or what another
service's plain Celery `send_task` writes (a native submission, see parse_arguments).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from askq.core.job import JobRequest, JobSpec, job_id_for, parse_request, parse_spec
from askq.errors import InvalidJobError

TASK_NAME = "askq.answer"
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def task_id(job_id: str, dispatch: int) -> str:
    """Celery task id of one dispatch of a job: readable in Flower, unique per message."""
    return f"{job_id}.{dispatch}.{uuid.uuid4().hex[:8]}"


def build(queue: str, job: dict[str, Any], dispatch: int) -> str:
    """The JSON text to LPUSH onto the queue list for one dispatch of a job."""
    tid = task_id(str(job.get("id")), dispatch)
    body = json.dumps(
        [[], {"job": job, "dispatch": dispatch}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
        separators=(",", ":"),
    )
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": TASK_NAME,
            "id": tid,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": tid,
            "parent_id": None,
            # Flower shows these; the question itself stays out of broker metadata.
            "argsrepr": "()",
            "kwargsrepr": json.dumps({"job_id": job.get("id"), "dispatch": dispatch}),
            "origin": _ORIGIN,
            "ignore_result": True,
        },
        "properties": {
            "correlation_id": tid,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid.uuid4().hex,
        },
    }
    return json.dumps(envelope, separators=(",", ":"))


def locate(stored: str) -> tuple[str, int] | None:
    """Job id and dispatch of a message as kombu keeps it unacked (JSON [envelope, exchange, key])."""
    try:
        entry = json.loads(stored)
        return locate_envelope(entry[0])
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        return None


def locate_envelope(envelope: Any) -> tuple[str, int] | None:
    """Job id and dispatch of a message envelope (as on the queue list); None if not askq's.

    Read from the `kwargsrepr` header build() writes, so the body is never decoded here.
    """
    try:
        info = json.loads(envelope["headers"]["kwargsrepr"])
        job_id, dispatch = info["job_id"], info["dispatch"]
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        return None
    if not isinstance(job_id, str) or not job_id or not isinstance(dispatch, int) or isinstance(dispatch, bool):
        return None
    return job_id, dispatch


def locate_submission(stored: str) -> tuple[str, str, str] | None:
    """Job id, envelope (JSON) and queue of a submission from another service as kombu keeps it
    unacked (JSON [envelope, exchange, routing key]); None if it is no submission.

    The job id is the one the worker gives the job it creates (submitted_spec): the idempotency
    key's, else the task id. Total: any input gives a result or None.
    """
    try:
        entry = json.loads(stored)
        envelope, queue = entry[0], entry[2]
        args, kwargs, _ = json.loads(base64.b64decode(envelope["body"], validate=True))
        job, dispatch = parse_arguments(args, kwargs)
        key, task = job.get("idempotency_key"), envelope["headers"]["id"]
    except Exception:  # any shape at all: not a submission askq can settle
        return None
    if dispatch is not None or not isinstance(queue, str) or not queue or not isinstance(task, str):
        return None
    job_id = job_id_for(key) if isinstance(key, str) and key else task
    return job_id, json.dumps(envelope, separators=(",", ":")), queue


# The envelope askq accepts: exactly what build() writes, plus what kombu adds on redelivery
# (`redelivered`, top level and in headers). Celery and kombu trust every one of these fields
# before any task code runs, so a wrong type there crashed workers (issue 9 A); each is
# checked here first. Values askq never varies (no ETA, expiry or Celery time limit) must be
# exactly that: an ETA would park the message unacked in worker memory, an expiry would let
# Celery revoke it without a record.
_ENVELOPE_KEYS = {"body", "content-encoding", "content-type", "headers", "properties", "redelivered"}
_EMBED_KEYS = {"callbacks", "errbacks", "chain", "chord"}
_MAX_ID_CHARS = 256
_MAX_HEADER_CHARS = 1024
_TEXT = f"a string of at most {_MAX_HEADER_CHARS} characters, or null"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_or_none(value: Any) -> bool:
    # Celery logs and Flower shows these per message: a megabyte here is a megabyte per line.
    return value is None or (isinstance(value, str) and len(value) <= _MAX_HEADER_CHARS)


# Celery's send_task writes argsrepr and kwargsrepr with saferepr(..., maxsize=1024), which ends
# its last token past the size (1,036 characters seen): allowed, still bounded.
_MAX_REPR_CHARS = 2 * _MAX_HEADER_CHARS
_REPR = f"a string of at most {_MAX_REPR_CHARS} characters, or null"


def _repr_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= _MAX_REPR_CHARS)


def _delivery_info(value: Any) -> bool:
    # kombu's QoS reads both keys of every message it records as unacked.
    return (isinstance(value, dict) and set(value) <= {"exchange", "routing_key", "redelivered"}
            and isinstance(value.get("exchange"), str) and isinstance(value.get("routing_key"), str)
            and isinstance(value.get("redelivered", False), bool))


def _short_str(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS


_HEADERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lang": (_str_or_none, _TEXT),
    "task": (lambda v: isinstance(v, str), "a string"),
    "id": (_short_str, f"a non-empty string of at most {_MAX_ID_CHARS} characters"),
    "shadow": (_str_or_none, _TEXT),
    "eta": (lambda v: v is None, "null (askq never schedules a message for later)"),
    "expires": (lambda v: v is None, "null (askq messages never expire)"),
    "group": (_str_or_none, _TEXT),
    "group_index": (lambda v: v is None or _is_int(v), "an integer or null"),
    "retries": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "timelimit": (lambda v: v is None or (isinstance(v, list) and v == [None, None]),
                  "[null, null] (askq sets no Celery time limit)"),
    "root_id": (_str_or_none, _TEXT),
    "parent_id": (_str_or_none, _TEXT),
    "argsrepr": (_repr_or_none, _REPR),
    "kwargsrepr": (_repr_or_none, _REPR),
    "origin": (_str_or_none, _TEXT),
    # send_task leaves it null unless the producer sets ignore_result.
    "ignore_result": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "redelivered": (lambda v: isinstance(v, bool), "true or false"),
    # Celery 5.3+ writes these on every send_task; askq's messages are never replaced or stamped.
    "replaced_task_nesting": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "stamped_headers": (lambda v: v is None or v == [], "null or [] (askq runs no stamped tasks)"),
    "stamps": (lambda v: v is None or v == {}, "null or {} (askq runs no stamped tasks)"),
}
_PROPERTIES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "correlation_id": (_str_or_none, _TEXT),
    "reply_to": (_str_or_none, _TEXT),
    "delivery_mode": (lambda v: v is None or (v in (1, 2) and _is_int(v)), "1, 2 or null"),
    "delivery_info": (_delivery_info, 'an object with string "exchange" and "routing_key"'),
    "priority": (lambda v: v is None or (_is_int(v) and 0 <= v <= 255), "an integer 0-255 or null"),
    "body_encoding": (lambda v: v == "base64", '"base64"'),
    "delivery_tag": (_short_str, f"a non-empty string of at most {_MAX_ID_CHARS} characters"),
}


@dataclass(frozen=True)
class Delivery:
    """A queue entry that passed every check: the job payload and its dispatch number."""

    job: JobSpec
    dispatch: int


@dataclass(frozen=True)
class Submission:
    """A queue entry that passed every check and submits a new job (another service's send_task)."""

    request: JobRequest


def parse_envelope(entry: Any) -> Delivery | Submission:
    """Check a parsed queue entry against askq's message contract, or raise InvalidJobError
    naming the first thing wrong. Total: no input makes it raise anything else."""
    try:
        return _parse_envelope(entry)
    except InvalidJobError:
        raise
    except Exception as exc:  # a shape nobody foresaw: still a refusal, never a crash
        raise InvalidJobError(f"message could not be checked: {type(exc).__name__}: {exc}") from None


def _parse_envelope(entry: Any) -> Delivery | Submission:
    if not isinstance(entry, dict):
        raise InvalidJobError(f"queue entry is JSON {_kind(entry)}, not a message envelope (an object)")
    extra = sorted(set(entry) - _ENVELOPE_KEYS)
    if extra:
        raise InvalidJobError(f"message envelope has unexpected fields {extra}")
    for name in ("body", "headers", "properties"):
        if name not in entry:
            raise InvalidJobError(f"message envelope has no {name!r}")
    content_type = entry.get("content-type")
    if content_type != "application/json":
        raise InvalidJobError(f"content-type must be application/json, got {_show(content_type)} "
                              "(askq accepts JSON only, never pickle)")
    if entry.get("content-encoding") != "utf-8":
        raise InvalidJobError(f"content-encoding must be utf-8, got {_show(entry.get('content-encoding'))}")
    _check_fields("headers", entry["headers"], _HEADERS, required=("task", "id"))
    _check_fields("properties", entry["properties"], _PROPERTIES,
                  required=("delivery_info", "delivery_tag", "body_encoding"))
    task = entry["headers"]["task"]
    if task != TASK_NAME:
        raise InvalidJobError(f"unknown task name {task[:200]!r} (askq runs only {TASK_NAME})")
    return _parse_body(entry["body"], entry["headers"]["id"])


def _check_fields(where: str, fields: Any, rules: dict[str, tuple[Callable[[Any], bool], str]],
                  required: tuple[str, ...]) -> None:
    if not isinstance(fields, dict):
        raise InvalidJobError(f"{where} must be an object, got {_kind(fields)}")
    for name in required:
        if name not in fields:
            raise InvalidJobError(f"{where}.{name} is missing")
    for name, value in fields.items():
        rule = rules.get(name)
        if rule is None:
            raise InvalidJobError(f"{where} has an unexpected field {str(name)[:100]!r}")
        check, expected = rule
        if not check(value):
            raise InvalidJobError(f"{where}.{name} must be {expected}, got {_show(value)}")


def _parse_body(body: Any, message_id: str) -> Delivery | Submission:
    if not isinstance(body, str):
        raise InvalidJobError(f"body must be base64 text, got {_kind(body)}")
    try:
        text = base64.b64decode(body, validate=True).decode("utf-8")
    except (ValueError, TypeError) as exc:
        raise InvalidJobError(f"body is not base64 of UTF-8 text: {exc}") from None
    try:
        decoded = json.loads(text)
    except ValueError as exc:
        raise InvalidJobError(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidJobError("body is not JSON askq accepts: nested too deeply") from None
    if not (isinstance(decoded, list) and len(decoded) == 3):
        raise InvalidJobError(f"body must be a JSON list [args, kwargs, embed], got {_kind(decoded)}"
                              + (f" of {len(decoded)} elements" if isinstance(decoded, list) else ""))
    args, kwargs, embed = decoded
    if not isinstance(args, list):
        raise InvalidJobError(f"body args must be a list, got {_kind(args)}")
    if not isinstance(kwargs, dict):
        raise InvalidJobError(f"body kwargs must be an object, got {_kind(kwargs)}")
    if not isinstance(embed, dict) or set(embed) - _EMBED_KEYS or any(v is not None for v in embed.values()):
        # Celery would run these as further tasks after this one (or merge them into its request).
        raise InvalidJobError("body embed must be an object with only null callbacks, errbacks, chain, chord")
    job, dispatch = parse_arguments(args, kwargs)
    if dispatch is None:
        return Submission(parse_submission(job, message_id))
    return Delivery(parse_job(job), dispatch)


_KWARGS = frozenset({"job", "dispatch"})


def parse_arguments(args: Any, kwargs: dict[str, Any]) -> tuple[Any, int | None]:
    """The job payload and dispatch number of the answer task's arguments (not yet validated).

    Two forms. askq's own message (core.message.build) carries the whole stored job, with its
    `id` and `created`, and its dispatch number. Another service's submission
    (`send_task("askq.answer", kwargs={"job": {"question": ...}})`) carries only what a producer
    may give (JobRequest's fields): it has no `id`, `created` or `dispatch`, and returns dispatch
    None. Telling them apart by the job's own fields costs the internal path one dict lookup.
    """
    if args:
        raise InvalidJobError(f"positional arguments are not accepted, got {len(args)}")
    extra = kwargs.keys() - _KWARGS
    if extra or "job" not in kwargs:
        named = sorted(str(k)[:100] for k in extra)
        if "job" not in kwargs:
            raise InvalidJobError('job: field required (send_task("askq.answer", kwargs={"job": {"question": ...}}))'
                                  + (f", got fields {named}" if named else ""))
        raise InvalidJobError(f"unexpected message fields: {named}")
    job = kwargs["job"]
    if isinstance(job, dict) and "id" not in job and "created" not in job:
        if "dispatch" in kwargs:
            raise InvalidJobError("dispatch: only askq's own messages carry one; a job submitted with "
                                  "send_task gives only question, context, idempotency_key and metadata")
        return job, None
    dispatch = kwargs.get("dispatch", 1)
    if not _is_int(dispatch) or dispatch < 1:
        raise InvalidJobError(f"dispatch: must be a positive integer, got {_show(dispatch)}")
    return job, dispatch


def parse_job(job: Any) -> JobSpec:
    """parse_spec, plus the refusal of text that is not valid Unicode (a lone surrogate, which no
    provider request, log line or stored record could encode)."""
    _check_encodes(job)
    return parse_spec(job)


def parse_submission(job: Any, message_id: str) -> JobRequest:
    """A submitted job (the native form) checked as a producer's request; the message id must be
    able to become its job id when it has no idempotency key."""
    _check_encodes(job)
    request = parse_request(job)
    if request.idempotency_key is None and not _JOB_ID.match(message_id):
        raise InvalidJobError(f"task id {_show(message_id)} cannot name a job (at most 64 letters, digits, "
                              "'_', '.', ':' or '-'): give the job an idempotency_key, or use such a task_id")
    return request


def submitted_spec(request: JobRequest, message_id: str) -> JobSpec:
    """The job a native submission creates. Its id is the idempotency key's (as for every other
    way in), else the Celery task id itself: a redelivery of the same message, or a producer
    retrying with the same task_id, names the same job, and `send_task(...).id` is the job id."""
    spec = JobSpec.of(request)
    if request.idempotency_key is None:
        spec = spec.model_copy(update={"id": message_id})
    return spec


# JobSpec's id rule (askq/core/job.py), for a task id that is to become a job id.
_JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")


def _check_encodes(job: Any) -> None:
    try:
        json.dumps(job, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJobError("job: contains a lone surrogate (text that is not valid Unicode)") from None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A value in an error message: short, and always encodable."""
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
