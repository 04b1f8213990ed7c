"""Submission from every way in (Client, submit_many, HTTP API, HttpClient): a hostile or careless
caller gets one clear InvalidJobError / 422 naming the field and what was expected, and nothing
is enqueued, not even part of a batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from askq.config.settings import ApiSettings, Settings
from askq.core import keys, message
from askq.core.job import parse_spec, payload_text
from askq.errors import InvalidJobError
from askq.producers.api import create_app
from askq.producers.client import Client, prepare_job
from askq.producers.httpclient import HttpClient
from askq.producers.jobsfile import load_jobs_file
from askq.producers.routes.jobs import parse_submission
from askq.stack import Stack
from tests.test_api import AUTH, TOKEN, serve_api

# (keyword arguments to submit, the field the error must name, what the error must say)
BAD_SUBMITS: list[tuple[dict[str, Any], str, str]] = [
    ({"question": b"hi"}, "question", "expected a string, got bytes"),
    ({"question": None}, "question", "expected a string, got null"),
    ({"question": 42}, "question", "expected a string, got a number"),
    ({"question": ["hi"]}, "question", "expected a string, got a list"),
    ({"question": "   \n\t"}, "question", "blank"),
    ({"question": "a\x00b"}, "question", "NUL character"),
    ({"question": "a\ud800b"}, "question", "not valid UTF-8"),
    ({"question": "hi", "context": "abc"}, "context", "expected a valid list of strings, got a string"),
    ({"question": "hi", "context": b"abc"}, "context", "got bytes"),
    ({"question": "hi", "context": {"doc": "x"}}, "context", "got an object"),
    ({"question": "hi", "context": 7}, "context", "got a number"),
    ({"question": "hi", "context": ["ok", 5]}, "context.1", "expected a string, got a number"),
    ({"question": "hi", "context": [b"doc"]}, "context.0", "got bytes"),
    ({"question": "hi", "context": [None]}, "context.0", "got null"),
    ({"question": "hi", "context": ["fine", "x\udcff"]}, "context.1", "not valid UTF-8"),
    ({"question": "hi", "context": ["nul\x00"]}, "context.0", "NUL character"),
    ({"question": "hi", "idempotency_key": 5}, "idempotency_key", "expected a string, got a number"),
    ({"question": "hi", "idempotency_key": b"k"}, "idempotency_key", "got bytes"),
    ({"question": "hi", "idempotency_key": ["k"]}, "idempotency_key", "got a list"),
    ({"question": "hi", "idempotency_key": "k" * 257}, "idempotency_key", "at most 256"),
    ({"question": "hi", "idempotency_key": ""}, "idempotency_key", "at least 1"),
    ({"question": "hi", "idempotency_key": "  "}, "idempotency_key", "blank"),
    ({"question": "hi", "idempotency_key": "a\nb"}, "idempotency_key", "control character"),
    ({"question": "hi", "idempotency_key": "k\ud800"}, "idempotency_key", "not valid UTF-8"),
    ({"question": "hi", "metadata": "team=billing"}, "metadata", "expected an object, got a string"),
    ({"question": "hi", "metadata": [("team", "billing")]}, "metadata", "got a list"),
    ({"question": "hi", "metadata": {"n": float("nan")}}, "metadata.n", "finite"),
    ({"question": "hi", "metadata": {"n": float("-inf")}}, "metadata.n", "finite"),
    ({"question": "hi", "metadata": {"n": 2**63}}, "metadata.n", "64-bit"),
    ({"question": "hi", "metadata": {"n": -(2**63) - 1}}, "metadata.n", "64-bit"),
    ({"question": "hi", "metadata": {"n": 10**5000}}, "metadata.n", "64-bit"),
    ({"question": "hi", "metadata": {"n": 1e19}}, "metadata.n", "64-bit"),
    ({"question": "hi", "metadata": {"n": {"nested": 1}}}, "metadata.n", "got an object"),
    ({"question": "hi", "metadata": {"n": [1, 2]}}, "metadata.n", "got a list"),
    ({"question": "hi", "metadata": {"n": b"x"}}, "metadata.n", "got bytes"),
    ({"question": "hi", "metadata": {"n": "a\ud800"}}, "metadata.n", "not valid UTF-8"),
    ({"question": "hi", "metadata": {"n": "nul\x00"}}, "metadata.n", "NUL character"),
    ({"question": "hi", "metadata": {"n": "x" * 2049}}, "metadata.n", "at most 2048"),
    ({"question": "hi", "metadata": {1: "x"}}, "metadata", "key 1: expected a string, got a number"),
    ({"question": "hi", "metadata": {"k\ud800": "x"}}, "metadata", "not valid UTF-8"),
    ({"question": "hi", "metadata": {"k\x1b[31m": "x"}}, "metadata", "control character"),
    ({"question": "hi", "metadata": {"": "x"}}, "metadata", "empty"),
    ({"question": "hi", "metadata": {"k" * 129: 1}}, "metadata", "at most 128"),
    ({"question": "hi", "metadata": {f"k{i}": i for i in range(65)}}, "metadata", "65 keys, at most 64"),
]


def _ids(case: tuple[dict[str, Any], str, str]) -> str:
    return ascii(case[2])


def nothing_enqueued(r: redis.Redis, settings: Settings) -> bool:
    return r.llen(settings.queue) == 0 and r.zcard(keys.PENDING) == 0 and r.dbsize() == 0


@pytest.mark.parametrize(("kwargs", "field", "problem"), BAD_SUBMITS, ids=[_ids(c) for c in BAD_SUBMITS])
def test_client_submit_refuses_bad_fields_naming_the_field_and_what_it_expected(
    settings: Settings, r: redis.Redis, kwargs: dict[str, Any], field: str, problem: str
) -> None:
    client = Client(settings)
    with pytest.raises(InvalidJobError) as refused:
        client.submit(**kwargs)
    message = str(refused.value)
    assert message.startswith(f"{field}: ") and problem in message, message
    message.encode("utf-8")  # printable and sendable: never the bad text itself
    # The same refusal with derive_key (the key is derived only from a valid job).
    with pytest.raises(InvalidJobError, match=field.split(".")[0]):
        client.submit(**kwargs, derive_key=True)
    # The same job as one of a batch, after a good one: named by its position, nothing enqueued.
    with pytest.raises(InvalidJobError) as in_batch:
        client.submit_many([{"question": "Where is my order?"}, kwargs])
    assert str(in_batch.value).startswith(f"1 bad job, nothing was enqueued: job 1: {field}: ")
    assert problem in str(in_batch.value)
    assert nothing_enqueued(r, settings)
    client.close()


@pytest.mark.parametrize(("kwargs", "field", "problem"), BAD_SUBMITS, ids=[_ids(c) for c in BAD_SUBMITS])
def test_a_jobs_file_line_is_refused_as_the_client_refuses_it(
    tmp_path: Path, kwargs: dict[str, Any], field: str, problem: str
) -> None:
    try:
        line = json.dumps(kwargs)
    except (TypeError, ValueError):
        pytest.skip("no JSON spelling (bytes, or an integer too long to print)")
    if any(not isinstance(k, str) for k in kwargs.get("metadata") or ()):
        pytest.skip("JSON object keys are always strings")
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps({"question": "Where is my order?"}) + "\n" + line + "\n")
    with pytest.raises(InvalidJobError) as refused:
        load_jobs_file(path, Settings(redis_url="redis://127.0.0.1:1/0"))
    message = str(refused.value)
    assert message.startswith(f"{path}: 1 bad line, nothing was enqueued: line 2: {field}: "), message
    assert problem in message


def test_the_values_at_the_limits_are_accepted_and_stored_as_given(settings: Settings, r: redis.Redis) -> None:
    client = Client(settings)
    metadata = {"big": 2**63 - 1, "small": -(2**63), "f": -9.2e18, "yes": True, "none": None,
                "s": "é" * 2048, "k" * 128: "x", **{f"n{i}": i for i in range(57)}}
    assert len(metadata) == 64
    context = ("a tuple of documents", "", "tabs\tand\nnewlines\r\n", "emoji 🦆 and 中文", "esc \x1b[31m")
    job_id = client.submit("Is \U0001f986 here?\n", context=context, idempotency_key="k" * 256, metadata=metadata)
    stored = json.loads(r.hget(keys.job(job_id), "payload") or "{}")
    assert stored["context"] == list(context)
    assert stored["metadata"] == metadata and stored["metadata"]["yes"] is True
    assert stored["idempotency_key"] == "k" * 256
    client.close()


def test_submit_many_checks_every_job_lists_each_bad_one_and_enqueues_nothing(
    settings: Settings, r: redis.Redis
) -> None:
    client = Client(settings)
    jobs: list[Any] = [{"question": f"Where is order {i}?"} for i in range(700)]
    jobs[600] = {"question": "hi", "context": "abc"}
    jobs[650] = {"question": ""}
    jobs[651] = {"question": "hi", "colour": "red"}
    jobs[699] = "just a question"
    with pytest.raises(InvalidJobError) as refused:
        client.submit_many(jobs)
    message = str(refused.value)
    assert "4 bad jobs, nothing was enqueued" in message
    for expected in ("job 600: context: expected a valid list of strings", "job 650: question:",
                     "job 651: unknown field(s) ['colour']", "job 699: expected an object"):
        assert expected in message, message
    assert nothing_enqueued(r, settings)
    # Over the cap, the list is cut and says how many more there are.
    with pytest.raises(InvalidJobError, match=r"30 bad jobs, nothing was enqueued(.|\n)*and 10 more"):
        client.submit_many([{"question": ""}] * 30)
    for not_a_list in ("abc", {"question": "hi"}, None, 5):
        with pytest.raises(InvalidJobError, match="expected a list of jobs"):
            client.submit_many(not_a_list)  # type: ignore[arg-type]
    assert nothing_enqueued(r, settings)
    client.close()


def test_one_idempotency_key_for_two_different_jobs_in_a_batch_is_refused(
    settings: Settings, r: redis.Redis
) -> None:
    client = Client(settings)
    with pytest.raises(InvalidJobError, match="job 2: idempotency_key: also given to job 0 with a different"):
        client.submit_many([{"question": "Where is order 1?", "idempotency_key": "order-1"},
                            {"question": "Where is order 2?", "idempotency_key": "order-2"},
                            {"question": "Where is order 3?", "idempotency_key": "order-1"}])
    assert nothing_enqueued(r, settings)
    # The same job twice under one key is one job, as across separate submissions.
    ids = client.submit_many([{"question": "Where is order 1?", "idempotency_key": "order-1"},
                              {"question": "Where is order 1?", "idempotency_key": "order-1"}])
    assert ids[0] == ids[1] and r.llen(settings.queue) == 1
    # derive_key: a repeated question is the point (answered once), whatever its metadata.
    ids = client.submit_many([{"question": "Do you ship?", "metadata": {"n": 1}},
                              {"question": "Do you ship?", "metadata": {"n": 2}}], derive_key=True)
    assert ids[0] == ids[1] and r.llen(settings.queue) == 2
    client.close()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    api_settings = settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN])})
    with TestClient(create_app(api_settings), headers=AUTH) as client:
        yield client


API_BODIES: list[tuple[str, str, str]] = [
    ('{"question": "a\\ud800b"}', "question", "not valid UTF-8"),
    ('{"question": "hi", "context": ["\\udcff"]}', "context.0", "not valid UTF-8"),
    ('{"question": "hi", "metadata": {"k\\ud800": 1}}', "metadata", "not valid UTF-8"),
    ('{"question": "hi", "metadata": {"k": "\\ud800"}}', "metadata.k", "not valid UTF-8"),
    ('{"question": "hi", "idempotency_key": "\\ud800"}', "idempotency_key", "not valid UTF-8"),
    ('{"question": "hi", "metadata": {"n": NaN}}', "metadata.n", "finite"),
    ('{"question": "hi", "metadata": {"n": Infinity}}', "metadata.n", "finite"),
    ('{"question": "hi", "metadata": {"n": 99999999999999999999}}', "metadata.n", "64-bit"),
    ('{"question": "hi", "metadata": {"n": {"deep": [1]}}}', "metadata.n", "got an object"),
    ('{"question": " "}', "question", "blank"),
    ('{"question": "a\\u0000"}', "question", "NUL character"),
    ('{"question": "hi", "idempotency_key": 5}', "idempotency_key", "expected a string, got a number"),
    ('{"question": "hi", "idempotency_key": "a\\u001b"}', "idempotency_key", "control character"),
    ('{"question": "hi", "idempotency_key": "' + "k" * 257 + '"}', "idempotency_key", "at most 256"),
    ('{"question": "hi", "context": "abc"}', "context", "expected a valid list of strings, got a string"),
    ('{"jobs": [{"question": "a", "idempotency_key": "k"}, {"question": "b", "idempotency_key": "k"}]}',
     "jobs.1.idempotency_key", "also given to jobs.0 with a different"),
]


@pytest.mark.parametrize(("body", "field", "problem"), API_BODIES, ids=[c[2] + " " + c[1] for c in API_BODIES])
def test_the_api_refuses_the_same_bad_fields_with_a_422(
    api: TestClient, r: redis.Redis, settings: Settings, body: str, field: str, problem: str
) -> None:
    reply = api.post("/v1/jobs", content=body.encode(), headers={"Content-Type": "application/json"})
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert any(d["field"] == field and problem in d["problem"] for d in detail), detail
    assert nothing_enqueued(r, settings)


def test_the_api_takes_a_key_at_the_length_limit(api: TestClient, r: redis.Redis) -> None:
    reply = api.post("/v1/jobs", json={"question": "hi", "idempotency_key": "k" * 256})
    assert reply.status_code == 202, reply.text
    assert json.loads(r.hget(keys.job(reply.json()["id"]), "payload") or "{}")["idempotency_key"] == "k" * 256


@pytest.fixture
def api_url(stack: Stack) -> Iterator[str]:
    """`askq api` as a real uvicorn process on a free port."""
    url, proc = serve_api(stack)
    yield url
    proc.terminate()
    proc.wait(15)


def test_http_client_refuses_what_the_broker_client_refuses(
    api_url: str, r: redis.Redis, settings: Settings
) -> None:
    http = HttpClient(api_url, token=TOKEN)
    wrong = []
    for kwargs, field, problem in BAD_SUBMITS:
        for derive_key in (False, True):
            try:
                http.submit(**kwargs, derive_key=derive_key)
            except InvalidJobError as exc:
                if not (str(exc).startswith(field) and problem in str(exc)):
                    wrong.append((field, problem, str(exc)))
            except Exception as exc:
                wrong.append((field, problem, f"{type(exc).__name__}: {exc}"))
            else:
                wrong.append((field, problem, "accepted"))
    assert wrong == []
    with pytest.raises(InvalidJobError, match="job 1: context: expected a valid list of strings"):
        http.submit_many([{"question": "fine"}, {"question": "hi", "context": "abc"}])
    with pytest.raises(InvalidJobError, match="expected a list of jobs"):
        http.submit_many("abc")  # type: ignore[arg-type]
    assert nothing_enqueued(r, settings)
    # The limits are the server's: it still refuses what only it knows.
    with pytest.raises(InvalidJobError, match="question: 8001 characters, limit is 8000"):
        http.submit("x" * 8001)
    assert nothing_enqueued(r, settings)
    http.close()


# Hostile values for any field: text with surrogates and control characters, bytes, huge and
# non-finite numbers, nesting, and the wrong container types.
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=8),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
    st.sampled_from(["", " ", "\x00", "\ud800", "a\udcff", "\x1b[2J", "\u2028", "k" * 256, "k" * 257]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.one_of(st.text(max_size=5), st.sampled_from(["\ud800", "", "\x07"]), st.integers()), inner, max_size=3),
    max_leaves=6)
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
_GOOD = {
    "question": _TEXT.filter(str.strip),
    "context": st.lists(_TEXT, max_size=4),
    "idempotency_key": st.text(st.characters(codec="utf-8", exclude_categories=("Cc",)), min_size=1,
                               max_size=256).filter(str.strip),
    "metadata": st.dictionaries(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cc",)), min_size=1, max_size=10),
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(-9e18, 9e18), _TEXT),
        max_size=5),
}
_HOSTILE = st.one_of(_VALUES, st.lists(_SCALARS, max_size=3),
                     st.dictionaries(st.one_of(_TEXT, _SCALARS), _SCALARS, max_size=3))
# A good job with up to two fields made hostile (or dropped), so both outcomes are explored.
_JOBS = st.builds(
    lambda good, bad, dropped: {k: v for k, v in (good | bad).items() if k not in dropped},
    st.fixed_dictionaries({"question": _GOOD["question"]},
                          optional={k: v for k, v in _GOOD.items() if k != "question"}),
    st.dictionaries(st.sampled_from(sorted(_GOOD)), _HOSTILE, max_size=2),
    st.sets(st.sampled_from(sorted(_GOOD)), max_size=1),
)


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@hyp_settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(job=_JOBS, derive_key=st.booleans())
def test_any_input_is_refused_cleanly_or_becomes_a_job_a_worker_reads_back_identically(
    job: dict[str, Any], derive_key: bool
) -> None:
    limits = Settings(redis_url="redis://127.0.0.1:1/0")
    try:
        spec = prepare_job(job, limits, derive_key)
    except InvalidJobError as exc:
        str(exc).encode("utf-8")  # printable, sendable in a 422, loggable
        return
    payload = spec.model_dump(mode="json")
    # As an HTTP client encodes a provider request (and the API its replies): raw UTF-8, no NaN.
    json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    text = payload_text(payload)
    assert parse_spec(_strict_json(text)) == spec  # what the worker parses is what was submitted
    _strict_json(message.build("askq", payload, dispatch=1))
    # The API takes exactly what the Python client takes (where a Python None means "not given").
    given_fields = {k: v for k, v in job.items() if v is not None}
    specs, _ = parse_submission(json.dumps(given_fields).encode(), limits)
    assert specs[0].model_dump(exclude={"id", "created"}) == spec.model_dump(exclude={"id", "created"}) or derive_key


def test_the_schema_describes_the_rules_so_every_job_it_allows_is_accepted(
    settings: Settings, r: redis.Redis
) -> None:
    """Jobs generated from /openapi.json's own JobIn schema: none may get a 422 (or anything but 202/200)."""
    api_settings = settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN])})
    app = create_app(api_settings)
    with TestClient(app) as client:  # the schema is behind the token like every route
        raw = client.get("/openapi.json", headers=AUTH).json()
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    submit = schema["/v1/jobs"]["POST"]
    refused: list[str] = []

    @hyp_settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=submit.as_strategy())
    def call(case: schemathesis.Case) -> None:
        jobs = case.body.get("jobs", [case.body]) if isinstance(case.body, dict) else []
        keyed = [(j.get("idempotency_key"), json.dumps([j.get("question"), j.get("context", [])])) for j in jobs
                 if isinstance(j, dict) and j.get("idempotency_key") is not None]
        if len({k for k, _ in keyed}) != len(set(keyed)):
            return  # one key for two different jobs: a batch rule no schema can state (refused on purpose)
        reply = case.call(headers=AUTH)
        # The size limits are settings the schema may not state; they are tested on their own.
        over_a_limit = reply.status_code == 422 and all("limit is" in d["problem"] for d in reply.json()["detail"])
        if reply.status_code not in (200, 202) and not over_a_limit:
            refused.append(f"{reply.status_code} {reply.text[:200]} for {ascii(case.body)[:300]}")

    call()
    assert refused == []
