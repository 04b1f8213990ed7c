"""Hostile queue entries: each must end as exactly one invalid_payload dead letter, no worker hurt.

Every entry but the last few is a valid envelope from `askq.broker.envelope.build` with one thing
changed, so it tests that one thing. The job each names is never submitted, and its id
(`<tag>-<n>`) is written into every field that carries it (task id, kwargsrepr, delivery tag,
correlation id, the body's job), so a dead-letter record can be traced back to its entry
whichever field the change broke. Used by tests/test_hostile_entries.py and `askq chaos`.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from askq.broker.envelope import TASK_NAME, build

Envelope = dict[str, Any]


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    """A valid job payload (as producers store it) with some fields replaced."""
    base: dict[str, Any] = {"id": job_id, "question": "Where is my order?", "context": [], "idempotency_key": None,
            "metadata": {}, "created": time.time()}
    return base | fields


def envelope(queue: str, job_id: str, **job_fields: Any) -> Envelope:
    """A valid queue envelope for a job that is never stored, marked with job_id everywhere."""
    env: Envelope = json.loads(build(queue, job(job_id, **job_fields), dispatch=1))
    env["properties"]["delivery_tag"] = f"{job_id}.{uuid.uuid4().hex}"
    env["properties"]["correlation_id"] = env["headers"]["id"]
    return env


def encode_body(body: Any) -> str:
    """A message body as build() encodes it: JSON text, base64."""
    return base64.b64encode(json.dumps(body).encode()).decode()


def body_of(env: Envelope) -> Any:
    return json.loads(base64.b64decode(env["body"]))


def _set_body(body: Any) -> Callable[[Envelope], None]:
    return lambda env: env.__setitem__("body", encode_body(body))


def _kwargs(**changes: Any) -> Callable[[Envelope], None]:
    def change(env: Envelope) -> None:
        args, kwargs, embed = body_of(env)
        env["body"] = encode_body([args, kwargs | changes, embed])
    return change


def _header(name: str, value: Any) -> Callable[[Envelope], None]:
    return lambda env: env["headers"].__setitem__(name, value)


def _drop(path: str) -> Callable[[Envelope], None]:
    *parents, last = path.split(".")

    def change(env: Envelope) -> None:
        node = env
        for part in parents:
            node = node[part]
        del node[last]
    return change


def _compressed(env: Envelope) -> None:
    # A tiny zlib body that kombu would inflate before anything could refuse it (a bomb scaled down).
    env["headers"]["compression"] = "application/x-gzip"
    env["body"] = base64.b64encode(zlib.compress(b" " * 1_000_000)).decode()


def _body_fields(env: Envelope, **changes: Any) -> None:
    args, kwargs, embed = body_of(env)
    kwargs["job"] = kwargs["job"] | changes
    env["body"] = encode_body([args, kwargs, embed])


# Kind -> the one change made to a valid envelope.
_CHANGES: dict[str, Callable[[Envelope], None]] = {
    # Issue 9 section A: each of these killed every worker, or never left the queue.
    "no content-type": _drop("content-type"),
    "content-type application/data": lambda env: env.__setitem__("content-type", "application/data"),
    "content-type application/text": lambda env: env.__setitem__("content-type", "application/text"),
    "headers.task a list": _header("task", [TASK_NAME]),
    "body null": _set_body(None),
    "body 42": _set_body(42),
    "body a JSON object": _set_body({"job": {"id": "x"}, "dispatch": 1}),
    "body a 2-element list": _set_body([[], {"dispatch": 1}]),
    "headers.timelimit 'abc'": _header("timelimit", "abc"),
    "no id header": _drop("headers.id"),
    "job.created 'yesterday'": lambda env: _body_fields(env, created="yesterday"),
    "lone surrogate in the question": lambda env: _body_fields(env, question="Where is \ud800 my order?"),
    # Found while fixing them: other fields Celery or kombu trust before anything checks them.
    "headers null": lambda env: env.__setitem__("headers", None),
    "headers.id a list": _header("id", ["x"]),
    "headers.eta in 2099 (held unacked in worker memory)": _header("eta", "2099-01-01T00:00:00+00:00"),
    "headers.expires in the past (silently revoked)": _header("expires", "2000-01-01T00:00:00+00:00"),
    "headers.compression (inflated by kombu)": _compressed,
    "headers.retries 'x'": _header("retries", "x"),
    "headers.shadow a dict": _header("shadow", {"a": 1}),
    "unknown header": _header("x-evil", "1"),
    "properties.delivery_tag a list": lambda env: env["properties"].__setitem__("delivery_tag", ["t"]),
    "properties.body_encoding rot13": lambda env: env["properties"].__setitem__("body_encoding", "rot13"),
    "content-encoding latin-1": lambda env: env.__setitem__("content-encoding", "latin-1"),
    "body callbacks (would enqueue more tasks)": lambda env: env.__setitem__("body", encode_body(
        [[], body_of(env)[1], {"callbacks": [{"task": TASK_NAME, "args": [], "kwargs": {}}],
                               "errbacks": None, "chain": None, "chord": None}])),
    "body protocol-1 object with args": lambda env: env.__setitem__("body", encode_body(
        {"args": [], "kwargs": body_of(env)[1]})),
    "body kwargs a list": lambda env: env.__setitem__("body", encode_body([[], [1], {}])),
    "positional args": lambda env: env.__setitem__("body", encode_body([["x"], body_of(env)[1], {}])),
    "dispatch 0": _kwargs(dispatch=0),
    "dispatch a string": _kwargs(dispatch="1"),
    "job id with a surrogate": lambda env: _body_fields(env, id="bad\udc80id"),
    "question a number": lambda env: _body_fields(env, question=42),
    "huge header (1 MB)": _header("argsrepr", "A" * 1_000_000),
    "headers.kwargsrepr nested 100,000 deep": _header("kwargsrepr", "[" * 100_000),
    "properties.delivery_info without exchange": lambda env: env["properties"]["delivery_info"].pop("exchange"),
}


def hostile_entries(queue: str, tag: str = "hostile") -> dict[str, str]:
    """Kind -> the raw text to LPUSH onto `queue`; entry n names job `<tag>-<n>` (in kind order)."""
    entries: dict[str, str] = {}
    for n, (kind, change) in enumerate(_CHANGES.items()):
        env = envelope(queue, f"{tag}-{n}")
        change(env)
        entries[kind] = json.dumps(env)
    n = len(entries)
    # Not even an envelope: kombu itself cannot parse these.
    entries["JSON nested 100,000 deep"] = json.dumps({"m": f"{tag}-{n}"})[:-1] + ', "x": ' + "[" * 100_000
    entries["not JSON"] = f"{tag}-{n + 1} \x00 }}{{ garbage"
    entries["JSON list, no envelope"] = json.dumps([f"{tag}-{n + 2}", 1, 2])
    entries["JSON integer of 5,000 digits"] = json.dumps({"m": f"{tag}-{n + 3}"})[:-1] + ', "x": ' + "7" * 5000 + "}"
    return entries


def marker(tag: str = "hostile") -> re.Pattern[str]:
    """Finds the `<tag>-<n>` mark of an entry in a dead-letter record's raw text or error."""
    return re.compile(rf"\b{re.escape(tag)}-(\d+)\b")
