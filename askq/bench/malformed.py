"""Queue entries no worker may run, each tagged so its dead letter can be found again.

Each entry carries a tag (letters and digits, so it survives as a job id) in every place a
dead-letter record may keep: the text itself, the `kwargsrepr` header's job id, the job id in
the body. A record matches an entry when its job id, raw text, payload or error holds the tag;
every entry must match exactly one `invalid_payload` record. A record that keeps no tag
(e.g. an entry whose body has no job) is paired with an entry no record matched.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from askq.broker import envelope
from askq.core.deadletter import DeadLetter
from askq.core.job import JobSpec


@dataclass(frozen=True)
class Entry:
    """One malformed queue entry: what is wrong with it, its bytes, and its tag."""

    name: str
    data: bytes
    tag: str


def _job(tag: str, **changes: Any) -> dict[str, Any]:
    job = JobSpec.new(f"chaos malformed entry {tag}", [], None, None).model_dump(mode="json")
    job["id"] = tag
    job.update(changes)
    return job


def _envelope(queue: str, tag: str, body: Any = None, raw_body: str | None = None,
              headers: dict[str, Any] | None = None, drop: tuple[str, ...] = (),
              top: dict[str, Any] | None = None) -> bytes:
    """A valid message for a job named `tag`, then changed: body, raw body, headers, top-level keys."""
    env = json.loads(envelope.build(queue, _job(tag), dispatch=1))
    env["headers"]["kwargsrepr"] = json.dumps({"job_id": tag, "dispatch": 1})
    if raw_body is not None:
        env["body"] = raw_body
    elif body is not None:
        # json.dumps escapes a lone surrogate as \ud800: valid JSON text, an invalid string once decoded.
        env["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    env["headers"].update(headers or {})
    for path in drop:
        where, _, key = path.rpartition(".")
        (env[where] if where else env).pop(key, None)
    env.update(top or {})
    return json.dumps(env).encode()


_OPTIONS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def malformed_entries(queue: str, run: str) -> list[Entry]:
    """Every kind of unrunnable entry chaos pushes (issue 9 section A's kinds and the older ten)."""
    def tag(i: int) -> str:
        return f"chaosbad{i:02d}{run}"

    def kw(i: int, **changes: Any) -> dict[str, Any]:
        return {"job": _job(tag(i), **changes), "dispatch": 1}

    made: list[tuple[str, bytes]] = [
        ("not_json", f"this is not json {tag(0)}".encode()),
        ("not_utf8", b"\x00\xff{garbage " + tag(1).encode()),
        ("not_an_envelope", json.dumps({"hello": "world", "tag": tag(2)}).encode()),
        ("json_list", json.dumps([1, 2, 3, tag(3)]).encode()),
        ("unknown_task", _envelope(queue, tag(4), body=[[], kw(4), _OPTIONS], headers={"task": "askq.no_such_task"})),
        ("body_not_base64", _envelope(queue, tag(5), raw_body=f"%%% not base64 %%% {tag(5)}")),
        ("job_missing", _envelope(queue, tag(6), body=[[], {"dispatch": 1}, _OPTIONS])),
        ("positional_args", _envelope(queue, tag(7), body=[["positional"], {"job": {"id": tag(7)}}, _OPTIONS])),
        ("empty_question", _envelope(queue, tag(8), body=[[], kw(8, question=""), _OPTIONS])),
        ("job_not_object", _envelope(queue, tag(9), body=[[], {"job": f"not an object {tag(9)}", "dispatch": 0},
                                                            _OPTIONS])),
        ("no_content_type", _envelope(queue, tag(10), drop=("content-type",))),
        ("content_type_data", _envelope(queue, tag(11), top={"content-type": "application/data"})),
        ("content_type_text", _envelope(queue, tag(12), top={"content-type": "application/text"})),
        ("task_a_list", _envelope(queue, tag(13), headers={"task": [envelope.TASK_NAME]})),
        ("body_null", _envelope(queue, tag(14), raw_body=base64.b64encode(b"null").decode())),
        ("body_42", _envelope(queue, tag(15), body=42)),
        ("body_object", _envelope(queue, tag(16), body=kw(16))),
        ("body_two_items", _envelope(queue, tag(17), body=[[], kw(17)])),
        ("timelimit_abc", _envelope(queue, tag(18), headers={"timelimit": "abc"})),
        ("no_id_header", _envelope(queue, tag(19), drop=("headers.id",))),
        ("created_yesterday", _envelope(queue, tag(20), body=[[], kw(20, created="yesterday"), _OPTIONS])),
        ("lone_surrogate", _envelope(queue, tag(21), body=[[], kw(21, question=f"why \ud800 {tag(21)}"),
                                                            _OPTIONS])),
    ]
    return [Entry(name, data, tag(i)) for i, (name, data) in enumerate(made)]


def matches(record: DeadLetter, tag: str) -> bool:
    """Whether a dead-letter record is the one of the entry carrying `tag`."""
    payload = json.dumps(record.payload) if record.payload is not None else ""
    return any(tag in text for text in (record.job_id or "", record.raw or "", payload, record.error))


def records_per_entry(entries: list[Entry], records: list[DeadLetter]) -> tuple[dict[str, int], int]:
    """Entry name -> how many records are its own, and the records no entry can claim.

    Untagged records go to entries left with none, one each; the rest are surplus.
    """
    counts = {e.name: 0 for e in entries}
    untagged = 0
    for record in records:
        owners = [e for e in entries if matches(record, e.tag)]
        if owners:
            for e in owners:
                counts[e.name] += 1
        else:
            untagged += 1
    for name in [n for n, c in counts.items() if c == 0]:
        if untagged == 0:
            break
        counts[name], untagged = 1, untagged - 1
    return counts, untagged
