"""The job contract: what a producer submits, what a worker stores, what a reader gets back."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from askq.core.deadletter import DeadReason
from askq.errors import InvalidJobError, describe_validation

# Idempotency keys map to job ids deterministically, so concurrent submitters agree on the id.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5f1c7a2e-3b0d-4a57-9a8e-0c5d1e7b2a41")


class JobState(StrEnum):
    """Where a job is: queued -> running -> succeeded | dead (retrying waits for a durable retry).

    cancelled (asked to by a producer) and expired (not started by its expires_at) end a job
    that is not finished: they are terminal, and not dead letters (nothing went wrong).
    """

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED})


class CancelOutcome(StrEnum):
    """What a cancel did: cancelled it now, or found it already ended (and how)."""

    CANCELLED = "cancelled"
    ALREADY_CANCELLED = "already_cancelled"
    ALREADY_SUCCEEDED = "already_succeeded"
    ALREADY_DEAD = "already_dead"
    ALREADY_EXPIRED = "already_expired"


# The contract's own limits on metadata (the question and context limits are settings): it
# labels a job, so it stays small beside the text it labels.
METADATA_MAX_KEYS = 64
METADATA_MAX_KEY_CHARS = 128
METADATA_MAX_VALUE_CHARS = 2048
# Metadata numbers stay within a signed 64-bit integer's range, so every JSON reader (and Lua's)
# reads the same number, and the schema can say so.
_INT_LIMIT = 2**63


def kind_of(value: Any) -> str:
    """What a value is, in the words of JSON (Python callers see bytes called bytes)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    return type(value).__name__


def _refuse(problem: str) -> PydanticCustomError:
    # A custom error keeps pydantic's "Value error, " prefix out of the message a caller reads.
    return PydanticCustomError("askq_invalid", problem)


def _text_problem(text: str) -> str | None:
    """Why text cannot be stored and sent to a provider as UTF-8, or None. Never quotes the text."""
    try:
        if not text.isascii():  # a flag on the string: ASCII text needs no encoding to know
            text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate (e.g. from bytes decoded with surrogateescape, or a JSON "\ud800").
        return (f"not valid UTF-8 text: {exc.reason} (U+{ord(text[exc.start]):04X} at index {exc.start})")
    if "\x00" in text:
        # Never meaningful in text; the usual sign of binary data or a mis-decoded file.
        return f"contains a NUL character (at index {text.index(chr(0))})"
    return None


# Unicode's control characters (category Cc): C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _control_index(text: str) -> int | None:
    found = _CONTROL.search(text)
    return found.start() if found else None


def _text(value: Any) -> str:
    """A string that encodes as UTF-8 and holds no NUL (question, context document)."""
    if not isinstance(value, str):
        raise _refuse(f"expected a string, got {kind_of(value)}")
    problem = _text_problem(value)
    if problem:
        raise _refuse(problem)
    return value


def _question(value: Any) -> str:
    text = _text(value)
    if text and not text.strip():
        raise _refuse("must not be blank (it is only whitespace)")
    return text


def _key(value: Any) -> Any:
    """An idempotency key: printable text, since it names the job (None passes: no key)."""
    if value is None:
        return None
    text = _question(value)
    index = _control_index(text)
    if index is not None:
        raise _refuse(f"contains a control character (U+{ord(text[index]):04X} at index {index})")
    return text


def _context(value: Any) -> Any:
    """A list (or tuple) of documents; a lone string would otherwise be split into characters."""
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, list):
        raise _refuse(f"expected a valid list of strings, got {kind_of(value)}")
    return value


def _metadata_key(key: Any) -> str | None:
    """Why a metadata key is refused, or None. Keys are shown with ascii() only: they may be hostile."""
    if not isinstance(key, str):
        try:
            shown = ascii(key)[:40]
        except Exception:  # an int too long to print, or a hostile __repr__
            shown = "(not shown)"
        return f"key {shown}: expected a string, got {kind_of(key)}"
    if not key:
        return "a key is empty"
    problem = _text_problem(key)
    index = _control_index(key)
    if len(key) > METADATA_MAX_KEY_CHARS:
        problem = f"{len(key)} characters, at most {METADATA_MAX_KEY_CHARS}"
    elif index is not None and not problem:
        problem = f"contains a control character (U+{ord(key[index]):04X} at index {index})"
    if problem:
        return f"key {key[:40]!a}{'...' if len(key) > 40 else ''}: {problem}"
    return None


def _metadata(value: Any) -> Any:
    """An object of at most METADATA_MAX_KEYS printable keys; its values are checked one by one."""
    if isinstance(value, Mapping) and not isinstance(value, dict):
        value = dict(value)
    if not isinstance(value, dict):
        raise _refuse(f"expected an object, got {kind_of(value)}")
    if len(value) > METADATA_MAX_KEYS:
        raise _refuse(f"{len(value)} keys, at most {METADATA_MAX_KEYS}")
    for key in value:
        problem = _metadata_key(key)
        if problem:
            raise _refuse(problem)
    return value


def _metadata_value(value: Any) -> Any:
    """A flat value: a short string, a finite number in a 64-bit integer's range, a boolean or null."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse(f"must be a finite number, got {value}")
    if isinstance(value, int | float):
        if not -_INT_LIMIT <= value <= _INT_LIMIT - 1:
            raise _refuse("number out of range: it must lie in a signed 64-bit integer's range (-2**63 to 2**63-1)")
        return value
    if isinstance(value, str):
        if len(value) > METADATA_MAX_VALUE_CHARS:
            raise _refuse(f"{len(value)} characters, at most {METADATA_MAX_VALUE_CHARS}")
        return _text(value)
    raise _refuse(f"expected a string, number, boolean or null, got {kind_of(value)}")


# expires_at is epoch seconds: anything outside these bounds is a unit mistake (milliseconds
# since the epoch are ~1.7e12) or not a date at all. ttl_s is at most a year.
EXPIRES_AT_MIN = 1_000_000_000.0  # 2001-09-09
EXPIRES_AT_MAX = 10_000_000_000.0  # 2286-11-20
TTL_MAX_S = 365 * 24 * 3600.0


def _seconds(value: Any) -> Any:
    """A finite number of seconds (None passes: not given); no string or boolean stands in for one."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(f"expected a number of seconds, got {kind_of(value)}")
    if not math.isfinite(value):
        raise _refuse(f"must be a finite number, got {value}")
    return float(value)


def _epoch(value: Any) -> Any:
    seconds = _seconds(value)
    if seconds is not None and not EXPIRES_AT_MIN <= seconds < EXPIRES_AT_MAX:
        hint = " (it looks like milliseconds: give seconds)" if seconds >= EXPIRES_AT_MAX * 100 else ""
        raise _refuse(f"must be epoch seconds between {EXPIRES_AT_MIN:.0f} and {EXPIRES_AT_MAX:.0f}, "
                      f"got {seconds:g}{hint}")
    return seconds


# The same rules as JSON Schema patterns (ECMA-262), so /openapi.json describes what is accepted.
# Whitespace is what Python's str.isspace() calls whitespace; control characters are category Cc.
_WHITESPACE = ("\\t\\n\\u000b\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
               "\\u205f\\u3000")
_NUL = "\\u0000"
_CONTROLS = "\\u0000-\\u001f\\u007f-\\u009f"


def _not_blank_without(excluded: str) -> str:
    return f"^[^{excluded}]*[^{excluded}{_WHITESPACE}][^{excluded}]*$"


_TEXT_SCHEMA: JsonDict = {"type": "string", "pattern": f"^[^{_NUL}]*$"}
_METADATA_SCHEMA: JsonDict = {
    "maxProperties": METADATA_MAX_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": METADATA_MAX_KEY_CHARS, "pattern": f"^[^{_CONTROLS}]*$"},
    "additionalProperties": {"anyOf": [
        _TEXT_SCHEMA | {"maxLength": METADATA_MAX_VALUE_CHARS},
        {"type": "number", "minimum": -_INT_LIMIT, "maximum": _INT_LIMIT - 1},
        {"type": "boolean"},
        {"type": "null"},
    ]},
}


# A callback URL: absolute http(s), a host, no credentials, printable ASCII (non-ASCII must be
# percent-encoded or punycode), so it travels in JSON and Lua unescaped. Which hosts may be
# called is a setting, checked where settings are known (askq/core/webhook.py check_callback).
CALLBACK_URL_MAX_CHARS = 2048
_URL_CHARS = re.compile(r"^[!#-\[\]-~]+$")  # printable ASCII without space, '"' or backslash


def _callback_url(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _refuse(f"expected a string (an http or https URL), got {kind_of(value)}")
    if len(value) > CALLBACK_URL_MAX_CHARS:
        raise _refuse(f"{len(value)} characters, at most {CALLBACK_URL_MAX_CHARS}")
    if not _URL_CHARS.match(value):
        raise _refuse("must be printable ASCII without spaces, quotes or backslashes (percent-encode the rest)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise _refuse(f"not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme[:20]!a}" if parts.scheme else "none"
        raise _refuse(f"only http and https URLs are called back, got scheme {shown}")
    if parts.username is not None or parts.password is not None:
        # Never stored or logged: a URL's userinfo is a credential.
        raise _refuse("must not carry credentials (user:password@); the receiver verifies the signature instead")
    if not parts.hostname:
        raise _refuse("has no host")
    if port == 0:
        raise _refuse("port 0 is not a port")
    if parts.fragment:
        raise _refuse("must not have a #fragment (it is never sent)")
    return value


# What the schema states (a subset of what is accepted: host names, not IP literals).
CALLBACK_URL_PATTERN = ("^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.-]*[A-Za-z0-9][A-Za-z0-9.-]*(:[1-9][0-9]{0,3})?"
                        "([/?][!$-\\[\\]-~]*)?$")

Text = Annotated[str, BeforeValidator(_text)]
MetadataValue = Annotated[str | int | float | bool | None, BeforeValidator(_metadata_value)]
# Metadata, or a match on it (a bulk cancel's where): checked, and described in the schema, alike.
Metadata = Annotated[dict[str, MetadataValue], BeforeValidator(_metadata)]
METADATA_SCHEMA = _METADATA_SCHEMA


class JobRequest(BaseModel):
    """What a producer submits: the question and what goes with it, before askq gives it an id.

    Every field is checked for its type first (no coercion: bytes are not a string, a string is
    not a list of documents), then for text that cannot travel as UTF-8.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        # expires_at and ttl_s are alternatives (the model validator's rule, said in the schema).
        "not": {"required": ["expires_at", "ttl_s"],
                "properties": {"expires_at": {"type": "number"}, "ttl_s": {"type": "number"}}}})

    question: Annotated[str, BeforeValidator(_question)] = Field(
        min_length=1, json_schema_extra={"pattern": _not_blank_without(_NUL)})
    context: Annotated[list[Text], BeforeValidator(_context)] = Field(
        default_factory=list, json_schema_extra={"items": _TEXT_SCHEMA})
    idempotency_key: Annotated[str | None, BeforeValidator(_key)] = Field(
        None, min_length=1, max_length=256, json_schema_extra={"pattern": _not_blank_without(_CONTROLS)})
    metadata: Annotated[dict[str, MetadataValue], BeforeValidator(_metadata)] = Field(
        default_factory=dict, json_schema_extra=_METADATA_SCHEMA)
    # POSTed the job's view, signed, once it is terminal (askq/workers/callbacks.py).
    callback_url: Annotated[str | None, BeforeValidator(_callback_url)] = Field(
        None, max_length=CALLBACK_URL_MAX_CHARS,
        json_schema_extra={"format": "uri", "pattern": CALLBACK_URL_PATTERN})

    @model_serializer(mode="wrap")
    def _omit_no_callback(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A job without a callback is stored and sent exactly as before the field existed, so
        # its payload (and a worker not yet upgraded) does not change.
        data = handler(self)
        if isinstance(data, dict) and data.get("callback_url", "") is None:
            del data["callback_url"]
        return data

    # When the job stops being worth starting: no run starts after it (a run already going is
    # not interrupted); it ends `expired`. Compared against the Redis server's clock.
    expires_at: Annotated[float | None, BeforeValidator(_epoch)] = Field(
        None, ge=EXPIRES_AT_MIN, lt=EXPIRES_AT_MAX, description="epoch seconds; not started by then: expired")
    ttl_s: Annotated[float | None, BeforeValidator(_seconds)] = Field(
        None, gt=0, le=TTL_MAX_S, description="seconds from submission (Redis's clock) until expires_at")

    @model_validator(mode="after")
    def _one_expiry(self) -> JobRequest:
        if self.expires_at is not None and self.ttl_s is not None:
            raise _refuse("give expires_at or ttl_s, not both")
        return self


# The one list of fields a producer may give (client, CLI file, HTTP API all check against it).
SUBMIT_FIELDS: tuple[str, ...] = tuple(JobRequest.model_fields)


class JobSpec(JobRequest):
    """What a producer asks plus its id and creation time (the message payload)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    created: float

    @classmethod
    def new(
        cls,
        question: Any,
        context: Any = None,
        idempotency_key: Any = None,
        metadata: Any = None,
        callback_url: Any = None,
        expires_at: Any = None,
        ttl_s: Any = None,
    ) -> JobSpec:
        """A new job from what a producer gave (None: no context, key, metadata, callback or expiry)."""
        return cls.of(parse_request(request_data(question, context, idempotency_key, metadata, callback_url,
                                                 expires_at, ttl_s)))

    @classmethod
    def of(cls, request: JobRequest, idempotency_key: str | None = None) -> JobSpec:
        """A new job for a checked request; idempotency_key (e.g. a derived one) overrides its own."""
        key = idempotency_key or request.idempotency_key
        if key is not None and key != request.idempotency_key:
            key = parse_request({"question": "-", "idempotency_key": key}).idempotency_key
        job_id = job_id_for(key) if key else uuid.uuid4().hex
        # Built without validating again: every field comes from a checked request or from here.
        return cls.model_construct(question=request.question, context=request.context, idempotency_key=key,
                                   metadata=request.metadata, callback_url=request.callback_url,
                                   expires_at=request.expires_at, ttl_s=request.ttl_s, id=job_id,
                                   created=time.time())


class TokenUsage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: int = 0
    completion: int = 0
    total: int = 0


class Result(BaseModel):
    """A stored answer: which tier gave it, how, and how long it took."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    answer: str
    source: str  # provider name, "cache" or "default"
    model: str | None = None
    degraded: bool = False
    attempts: int = 0
    latency_s: float = 0.0
    usage: TokenUsage = TokenUsage()
    started: float
    finished: float


class JobView(BaseModel):
    """A job as a reader sees it: state plus result or dead-letter reason."""

    model_config = ConfigDict(extra="forbid")

    id: str
    state: JobState
    question: str
    created: float
    updated: float | None = None
    delivery: int = 0
    attempts: int = 0
    result: Result | None = None
    reason: DeadReason | None = None
    error: str | None = None
    # Epoch seconds (Redis's clock) after which the job is not started: it ends expired.
    expires_at: float | None = None


def payload_text(payload: dict[str, Any]) -> str:
    """A job payload as the job hash stores it; the dead-letter queue compares messages against it."""
    return json.dumps(payload, separators=(",", ":"))


def job_id_for(idempotency_key: str) -> str:
    """The job id an idempotency key always maps to."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, idempotency_key).hex


def request_data(question: Any, context: Any = None, idempotency_key: Any = None,
                 metadata: Any = None, callback_url: Any = None, expires_at: Any = None,
                 ttl_s: Any = None) -> dict[str, Any]:
    """A request as a dict, from a Python caller's arguments (None means none given)."""
    data = {"question": question, "context": [] if context is None else context,
            "idempotency_key": idempotency_key, "metadata": {} if metadata is None else metadata,
            "expires_at": expires_at, "ttl_s": ttl_s}
    if callback_url is not None:
        data["callback_url"] = callback_url
    return data


def metadata_matches(metadata: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Whether every key of where is in metadata with an equal value of the same JSON kind
    (true is not 1, 1 is 1.0)."""
    for key, wanted in where.items():
        if key not in metadata:
            return False
        value = metadata[key]
        if isinstance(value, bool) != isinstance(wanted, bool) or value != wanted:
            return False
        if (value is None) != (wanted is None) or isinstance(value, str) != isinstance(wanted, str):
            return False
    return True


def parse_where(where: Any) -> dict[str, Any]:
    """A metadata match for a bulk cancel: a non-empty object checked like metadata itself."""
    if isinstance(where, Mapping) and not where:
        raise InvalidJobError("where: give at least one metadata key and value to match")
    try:
        return JobRequest.model_validate({"question": "-", "metadata": where}).metadata
    except ValidationError as exc:
        raise InvalidJobError(describe_validation(exc).replace("metadata", "where", 1)) from None


def parse_request(data: Any) -> JobRequest:
    """Validate what a producer submits, raising InvalidJobError that names each bad field."""
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidJobError(describe_validation(exc)) from None


def parse_spec(data: Any) -> JobSpec:
    """Validate a payload, raising InvalidJobError that names each bad field and its problem."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidJobError(describe_validation(exc)) from None


def key_conflicts(requests: Sequence[JobRequest]) -> list[tuple[int, int]]:
    """(first, other) positions of jobs in one batch that share an idempotency key but not their
    question and context: one of them would be silently dropped, so a batch with such a pair is refused.
    The same job twice under one key is no conflict (it is one job, as across two submissions)."""
    seen: dict[str, tuple[int, JobRequest]] = {}
    found = []
    for position, request in enumerate(requests):
        if request.idempotency_key is None:
            continue
        first = seen.setdefault(request.idempotency_key, (position, request))
        if first[0] != position and (first[1].question, first[1].context) != (request.question, request.context):
            found.append((first[0], position))
    return found


def check_limits(spec: JobRequest, max_question_chars: int, max_docs: int, max_context_chars: int) -> None:
    """Refuse oversized jobs with a message that says which limit was passed."""
    if len(spec.question) > max_question_chars:
        raise InvalidJobError(f"question: {len(spec.question)} characters, limit is {max_question_chars}")
    if len(spec.context) > max_docs:
        raise InvalidJobError(f"context: {len(spec.context)} documents, limit is {max_docs}")
    total = sum(len(doc) for doc in spec.context)
    if total > max_context_chars:
        raise InvalidJobError(f"context: {total} characters, limit is {max_context_chars}")
