"""No queue entry, however malformed, can stop a worker or vanish (issue 9 A).

Hostile entries are LPUSHed at two running workers: each must end as exactly one
`invalid_payload` dead letter that keeps the entry (bounded) and says what is wrong, while
both workers stay up, keep beating and keep answering normal jobs.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from askq.bench.hostile import body_of, encode_body, envelope, hostile_entries, marker
from askq.config.settings import Settings
from askq.core import keys, message
from askq.core.deadletter import MAX_RAW_CHARS, DeadLetter, DeadReason
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import JobState
from askq.core.liveness import list_workers
from askq.errors import InvalidJobError
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers

# What each reason must name, for the kinds issue 9 A reported.
NAMES_THE_PROBLEM = {
    "no content-type": "content-type",
    "content-type application/data": "application/data",
    "content-type application/text": "application/text",
    "headers.task a list": "headers.task",
    "body null": "body",
    "body 42": "body",
    "body a JSON object": "body",
    "body a 2-element list": "2 elements",
    "headers.timelimit 'abc'": "timelimit",
    "no id header": "headers.id",
    "job.created 'yesterday'": "created",
    "lone surrogate in the question": "surrogate",
    "headers.eta in 2099 (held unacked in worker memory)": "eta",
    "headers.expires in the past (silently revoked)": "expires",
    "headers.compression (inflated by kombu)": "compression",
    "JSON nested 100,000 deep": "nested",
}


def _start_two_workers(stack: Stack, r: redis.Redis, settings: Settings) -> dict[str, int]:
    for _ in range(2):
        stack.start_worker(concurrency=4)
    wait_workers(r, 2)
    return _alive_pids(r, settings)


def _alive_pids(r: redis.Redis, settings: Settings) -> dict[str, int]:
    return {w.name: w.pid or 0 for w in list_workers(r, settings) if w.state == "alive"}


def _by_mark(records: list[DeadLetter], pattern: re.Pattern[str]) -> dict[int, list[DeadLetter]]:
    """Dead letters grouped by the entry they came from (the mark found in their raw text)."""
    found: dict[int, list[DeadLetter]] = {}
    for record in records:
        marks = {int(m) for m in pattern.findall(record.raw or "")}
        assert len(marks) == 1, f"record {record.id} traces to {marks or 'no entry'}: {record.raw!r:.300}"
        found.setdefault(marks.pop(), []).append(record)
    return found


def _assert_workers_unharmed(stack: Stack, r: redis.Redis, settings: Settings, pids: dict[str, int]) -> None:
    assert all(p.poll() is None for p in stack.workers), "a worker process exited"
    # Same processes, still beating (their heartbeat is younger than three intervals).
    assert _alive_pids(r, settings) == pids
    for log in stack.var_dir.glob("worker*.log"):
        text = log.read_text(errors="replace")
        assert "Unrecoverable error" not in text, log
        assert "Connection to broker lost" not in text, log


def _assert_nothing_left(r: redis.Redis, settings: Settings) -> None:
    assert r.llen(settings.queue) == 0
    # Every entry that reached kombu's unacked bookkeeping was acknowledged: nothing is
    # restored after the visibility timeout to be refused again.
    wait_for(lambda: r.hlen(keys.KOMBU_UNACKED) == 0, 10, what="unacked entries acknowledged")


def test_each_hostile_entry_is_one_dead_letter_and_both_workers_keep_serving(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    pids = _start_two_workers(stack, r, settings)
    client = Client(settings)
    dlq = DeadLetterQueue(r, settings)
    before = [client.submit(f"Question {i} before the burst?") for i in range(3)]
    entries = hostile_entries(settings.queue)
    r.lpush(settings.queue, *entries.values())
    after = [client.submit(f"Question {i} after the burst?") for i in range(3)]

    for job_id in before + after:
        assert client.wait(job_id, timeout=30).state is JobState.SUCCEEDED
    wait_for(lambda: dlq.count() >= len(entries), 30, what=f"{len(entries)} dead letters")
    _assert_nothing_left(r, settings)
    _assert_workers_unharmed(stack, r, settings, pids)

    records = _by_mark(dlq.list(limit=1000), marker())
    problems = []
    for n, (kind, entry) in enumerate(entries.items()):
        got = records.get(n, [])
        if len(got) != 1:
            problems.append(f"{kind}: {len(got)} dead letters")
            continue
        record = got[0]
        assert record.reason is DeadReason.INVALID_PAYLOAD, kind
        assert record.raw and len(record.raw) <= MAX_RAW_CHARS, kind
        assert _keeps_entry(record.raw, entry), kind
        expected = NAMES_THE_PROBLEM.get(kind)
        if expected and expected not in record.error:
            problems.append(f"{kind}: reason {record.error!r} does not name {expected!r}")
        assert not r.exists(keys.job(f"hostile-{n}")), kind
    assert problems == []
    assert dlq.count() == len(entries)
    assert sim.requests("primary") == len(before + after)  # no hostile entry reached the LLM


def _keeps_entry(raw: str, entry: str) -> bool:
    """The record's raw text is the entry: verbatim, re-serialised, or cut at MAX_RAW_CHARS.

    A record whose payload could not be stored as such carries it after the entry as text.
    """
    head = raw.partition("\npayload: ")[0]
    if entry.startswith(head) and (head == entry or len(head) == MAX_RAW_CHARS):
        return True
    try:
        return bool(json.loads(head) == json.loads(entry))
    except (ValueError, RecursionError):
        return False


# ---- fuzzed entries ---------------------------------------------------------------------

FUZZ_TAG = "fz"
FUZZ_CASES = 520

_json_leaf = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
              | st.floats(allow_nan=False) | st.text(max_size=12)
              | st.sampled_from(["", "\ud800", "askq.answer", "application/json", "utf-8", "base64",
                                 "2000-01-01T00:00:00", "1", "0", "[null, null]", "%%%", "e30="]))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)

# Where a change can land: the envelope, its headers and properties, the body's parts, the job.
_ENVELOPE_PATHS = ["body", "content-type", "content-encoding", "headers", "properties", "x-extra",
                   *(f"headers.{h}" for h in ("lang", "task", "id", "shadow", "eta", "expires", "group",
                                              "group_index", "retries", "timelimit", "root_id", "parent_id",
                                              "argsrepr", "kwargsrepr", "origin", "ignore_result", "x-extra")),
                   *(f"properties.{p}" for p in ("correlation_id", "reply_to", "delivery_mode", "delivery_info",
                                                 "priority", "body_encoding", "x-extra")),
                   "properties.delivery_info.exchange", "properties.delivery_info.routing_key"]
_BODY_PATHS = ["@body", "@args", "@kwargs", "@embed", "@embed.callbacks", "@kwargs.dispatch", "@kwargs.x-extra",
               "@kwargs.job", *(f"@job.{f}" for f in ("id", "question", "context", "idempotency_key",
                                                        "metadata", "created", "x-extra"))]


@st.composite
def _mutation(draw: st.DrawFn) -> tuple[str, str, Any]:
    path = draw(st.sampled_from(_ENVELOPE_PATHS + _BODY_PATHS))
    op = draw(st.sampled_from(["set", "set", "set", "delete"]))
    return path, op, draw(_json) if op == "set" else None


def _apply(env: dict[str, Any], path: str, op: str, value: Any) -> None:
    if path.startswith("@"):
        args, kwargs, embed = body_of(env)
        parts = {"body": None, "args": args, "kwargs": kwargs, "embed": embed, "job": kwargs["job"]}
        head, _, rest = path[1:].partition(".")
        if not rest:
            if head == "body":
                env["body"] = encode_body(value) if op == "set" else base64.b64encode(b"").decode()
                return
            parts[head] = value if op == "set" else None
        else:
            node = parts[head]
            if op == "set":
                node[rest] = value
            else:
                node.pop(rest, None)
        kwargs = parts["kwargs"]
        if isinstance(kwargs, dict) and "job" in kwargs and head == "job":
            kwargs["job"] = parts["job"]
        env["body"] = encode_body([parts["args"], kwargs, parts["embed"]])
        return
    *parents, last = path.split(".")
    node = env
    for part in parents:
        node = node[part]
    if op == "set":
        node[last] = value
    else:
        node.pop(last, None)


def _fuzzed_entries(queue: str) -> list[tuple[str, str]]:
    """FUZZ_CASES valid envelopes with one hypothesis-drawn change each: (what changed, entry)."""
    cases: list[tuple[str, str]] = []

    @hsettings(max_examples=FUZZ_CASES, database=None, deadline=None,
               suppress_health_check=list(HealthCheck))
    @given(_mutation())
    def collect(mutation: tuple[str, str, Any]) -> None:
        if len(cases) >= FUZZ_CASES:
            return
        env = envelope(queue, f"{FUZZ_TAG}-{len(cases)}")
        path, op, value = mutation
        _apply(env, path, op, value)
        cases.append((f"{op} {path} = {value!r:.80}", json.dumps(env)))

    collect()
    return cases


def test_fuzzed_entries_each_end_as_one_dead_letter_while_workers_keep_serving(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    started = time.monotonic()
    cases = _fuzzed_entries(settings.queue)
    assert len(cases) >= 500
    pids = _start_two_workers(stack, r, settings)
    client = Client(settings)
    dlq = DeadLetterQueue(r, settings)
    before = client.submit("Is my refund on its way?")
    r.lpush(settings.queue, *(entry for _, entry in cases))
    after = client.submit("Can I change my delivery address?")
    for job_id in (before, after):
        assert client.wait(job_id, timeout=40).state is JobState.SUCCEEDED
    # A change can leave a valid message of askq's own (e.g. `dispatch` deleted: it defaults to 1)
    # for a job never stored: that is a copy that outlived its job, skipped and counted
    # (`unknown_job_messages`), not a dead letter. Everything the contract refuses is one dead letter.
    refused = {n for n, (_, entry) in enumerate(cases) if _refused(entry)}

    def ended() -> int:
        return dlq.count() + int(r.hget(keys.STATS, "unknown_job_messages") or 0)

    wait_for(lambda: ended() >= len(cases), 40, what=f"{len(cases)} dead letters or counted skips")
    _assert_nothing_left(r, settings)
    _assert_workers_unharmed(stack, r, settings, pids)

    records = _by_mark(dlq.list(limit=10_000), marker(FUZZ_TAG))
    wrong = [f"{what}: {len(records.get(n, []))} dead letters" for n, (what, _) in enumerate(cases)
             if len(records.get(n, [])) != 1 and (n in refused or len(records.get(n, [])) > 1)]
    assert wrong == []
    for record in dlq.list(limit=10_000):
        assert record.reason is DeadReason.INVALID_PAYLOAD
        assert record.error and record.raw and len(record.raw) <= MAX_RAW_CHARS
    assert ended() == len(cases)
    assert dlq.count() >= len(refused)
    assert sim.requests("primary") == 2
    assert time.monotonic() - started < 90


def _refused(entry: str) -> bool:
    try:
        message.parse_envelope(json.loads(entry))
    except (InvalidJobError, ValueError, RecursionError):
        return True
    return False


# ---- the dead-letter write itself ----------------------------------------------------------

HOSTILE_PAYLOADS: list[dict[str, Any]] = [
    {"id": "a", "question": "q", "created": "yesterday"},
    {"id": "a", "question": "q", "created": None},
    {"id": "a", "question": "q", "created": [1, 2]},
    {"id": "a", "question": "q", "created": 10**400},
    {"id": "a", "question": "q", "created": float("nan")},
    {"id": "a", "question": "lone \ud800 surrogate", "created": 1.0},
    {"id": "a\udc80b", "question": "q", "created": 1.0, "metadata": {"k\ud800": "v"}},
    {"id": "a", "question": "q", "created": 1.0, "context": [b"bytes are not JSON"]},
    {"id": "a", "question": "q", "created": 1.0, "x": object()},
]


def test_dead_letter_write_never_raises_on_hostile_data(settings: Settings, r: redis.Redis) -> None:
    dlq = DeadLetterQueue(r, settings)
    huge = "x" * 5_000_000
    calls: list[dict[str, Any]] = [
        *({"payload": p, "raw": "{}"} for p in HOSTILE_PAYLOADS),
        {"raw": "lone \ud800 surrogate in raw", "error": "and \udfff in the error"},
        {"raw": huge, "error": huge},
        {"raw": "\x00\xff" * 10, "history": [{"at": object(), "bad": "\ud800"}]},
        {"job_id": "job\ud800id", "raw": "{}"},
    ]
    for n, call in enumerate(calls):
        job_id = call.pop("job_id", f"job{n}")
        error = call.pop("error", f"hostile write {n}")
        outcome = dlq.kill(job_id, DeadReason.INVALID_PAYLOAD, error, **call)
        assert outcome == "ok", (n, outcome)
    records = dlq.list(limit=100)
    assert len(records) == len(calls)
    for record in records:
        assert record.reason is DeadReason.INVALID_PAYLOAD
        assert record.error and len(record.error) <= 2000
        assert record.raw is not None and len(record.raw) <= MAX_RAW_CHARS
        # Nothing stored is undecodable: the record round-trips through JSON.
        assert DeadLetter.model_validate_json(record.model_dump_json()) == record
    # What could not be stored as a payload is kept, as text, in the raw field.
    yesterday = next(rec for rec in records if "yesterday" in (rec.raw or "") + json.dumps(rec.payload))
    assert yesterday.created is None
    surrogate = next(rec for rec in records if "lone" in (rec.raw or "") and "surrogate" in (rec.raw or "")
                     and rec.payload is None)
    assert "\\ud800" in (surrogate.raw or "")


def test_dead_letter_of_a_stored_jobs_unwritable_payload_still_ends_the_job(
    settings: Settings, r: redis.Redis, tmp_path: Path
) -> None:
    """A stored job whose own payload cannot be serialised is still dead-lettered as itself."""
    from askq.core.job import payload_text

    payload = {"id": "surrogatejob", "question": "lone \ud800", "context": [], "idempotency_key": None,
               "metadata": {}, "created": time.time()}
    r.hset(keys.job("surrogatejob"), mapping={"state": "queued", "dispatch": 1, "payload": payload_text(payload),
                                              "created": payload["created"]})
    dlq = DeadLetterQueue(r, settings)
    assert dlq.kill("surrogatejob", DeadReason.INVALID_PAYLOAD, "refused", payload=payload, raw="{}") == "ok"
    assert r.hget(keys.job("surrogatejob"), "state") == "dead"
    assert dlq.show("surrogatejob").reason is DeadReason.INVALID_PAYLOAD


def test_reaper_resends_lost_messages_past_hostile_entries_waiting_in_the_queue(
    settings: Settings, r: redis.Redis
) -> None:
    """The reaper reads every queue entry to find lost messages: no entry may break that sweep."""
    from askq.workers.reaper import Reaper

    job_id = Client(settings).submit("Where is my parcel?")
    r.delete(settings.queue)  # its message is lost, as when a worker died right after BRPOP
    r.lpush(settings.queue, *hostile_entries(settings.queue).values())
    assert Reaper(r, settings).resend_lost(time.time() + 100) == 1
    assert r.llen(settings.queue) == len(hostile_entries(settings.queue)) + 1
    assert r.hget(keys.job(job_id), "state") == "queued"


def test_a_stored_job_whose_own_message_is_refused_is_dead_once_not_resent(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    """A job stored before a check existed (a lone surrogate in its question) is refused by the
    workers: the job itself ends dead, so the reaper does not resend it to be refused forever."""
    from askq.core.job import JobSpec
    from askq.core.store import JobStore

    stack.start_worker(concurrency=2)
    wait_workers(r, 1)
    spec = JobSpec.model_construct(id="oldjob1", question="Where is \ud800 my order?", context=[],
                                   idempotency_key=None, metadata={}, created=time.time())
    assert JobStore(r, settings).submit(spec)
    client = Client(settings)
    view = client.wait("oldjob1", timeout=30)
    assert view.state is JobState.DEAD and view.reason is DeadReason.INVALID_PAYLOAD
    assert "surrogate" in (view.error or "")
    record = DeadLetterQueue(r, settings).show("oldjob1")
    assert record.raw and "oldjob1" in record.raw
    # One record, nothing left to resend, nothing sent to the LLM but the next good job.
    good = client.submit("Is the shop open on Sunday?")
    assert client.wait(good, timeout=30).state is JobState.SUCCEEDED
    assert DeadLetterQueue(r, settings).count() == 1
    assert r.llen(settings.queue) == 0
    assert sim.requests("primary") == 1


def test_every_message_askq_builds_passes_the_contract_also_as_kombu_restores_it() -> None:
    """The check refuses whatever build() does not write: a field added there must be added here."""
    from askq.core import message
    from askq.core.job import JobSpec

    specs = [JobSpec.new("Where is my order?"),
             JobSpec.new("Ünïcödé ✓ question?", context=["doc one", "doc two"], idempotency_key="key-1",
                         metadata={"ticket": 4711, "vip": True, "note": None, "score": 0.5})]
    for spec in specs:
        for dispatch in (1, 7):
            env = json.loads(message.build("askq", spec.model_dump(mode="json"), dispatch))
            assert message.parse_envelope(env) == message.Delivery(spec, dispatch)
            # kombu's restore of an unacked message marks it redelivered, in three places.
            env["redelivered"] = env["headers"]["redelivered"] = True
            env["properties"]["delivery_info"]["redelivered"] = True
            assert message.parse_envelope(env) == message.Delivery(spec, dispatch)
