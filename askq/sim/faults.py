"""Fault configuration for the simulator and the choice of the fault a request gets."""

import random
import re
from collections.abc import Sequence
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "timeout",
    "hang",
    "reset",
    "malformed",
    "truncated",
    "empty",
    "bad_request",
    "auth",
    "forbidden",
    "not_found",
    "content_policy",
    "context_length",
    # Hostile providers: only a test or a scenario that names them gets them.
    "trickle",
    "oversize",
    "gzip_bomb",
    "redirect",
]
# Faults a provider shows in ordinary bad moments. A random mix (askq chaos) draws from these;
# the hostile kinds below need asking for by name, so no mix starts trickling a reply or
# sending 300 MB by accident.
HOSTILE_KINDS: frozenset[str] = frozenset({"trickle", "oversize", "gzip_bomb", "redirect"})
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind)) - HOSTILE_KINDS
# Every kind a `[[sim:KIND]]` marker may force.
MARKER_KINDS: frozenset[str] = FAULT_KINDS | HOSTILE_KINDS

# Options that only mean something for some kinds; setting one on another kind is an error.
_OPTION_KINDS: dict[str, frozenset[str]] = {
    "status": frozenset({"server_error"}),
    "trickle_bytes_per_s": frozenset({"trickle"}),
    "trickle_headers": frozenset({"trickle"}),
    "size_bytes": frozenset({"oversize", "gzip_bomb"}),
    "content_length": frozenset({"oversize"}),
    "location": frozenset({"redirect"}),
    "redirect_status": frozenset({"redirect"}),
    "malformed_as": frozenset({"malformed"}),
}
# Default body sizes: a 50 MB answer, and a gzip body that inflates to 300 MB.
OVERSIZE_BYTES = 50_000_000
GZIP_BOMB_BYTES = 300_000_000

# `[[sim:KIND]]` or `[[sim:KIND@MODEL]]` in a question forces a fault, so a
# test can make one particular job fail whatever the configuration says.
_MARKER = re.compile(r"\[\[sim:([a-z_]+)(?:@([^\]]+))?\]\]")


class FaultSpec(BaseModel):
    """One injectable fault: what happens, how often, and during which time window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    window: tuple[float, float] | None = None
    status: Literal[500, 502, 503] | None = None
    retry_after_s: float = Field(default=1.0, ge=0.0)
    hang_s: float = Field(default=30.0, ge=0.0)
    # trickle: the reply (status line, headers and body with trickle_headers, else the body
    # alone) is sent this many bytes a second, each byte soon enough to keep a read timeout
    # that resets on every byte from firing.
    trickle_bytes_per_s: float | None = Field(default=None, gt=0.0, le=1_000_000)
    trickle_headers: bool | None = None
    # oversize: the answer is this many bytes; gzip_bomb: the body inflates to this many bytes.
    size_bytes: int | None = Field(default=None, ge=0, le=4_000_000_000)
    # oversize: declare Content-Length (else the body is chunked, its size unknown up front).
    content_length: bool | None = None
    # redirect: where to (default: this simulator's /_sim/redirected/v1, which answers
    # differently, so a test can tell whether a client followed it).
    location: str | None = Field(default=None, min_length=1)
    redirect_status: Literal[301, 302, 303, 307, 308] | None = None
    # malformed: a JSON document cut in half, a well-formed `{}` without choices, or a
    # completion whose answer holds a lone surrogate (valid JSON, not encodable as UTF-8).
    malformed_as: Literal["cut_json", "empty_object", "lone_surrogate"] | None = None

    @model_validator(mode="after")
    def _check(self) -> "FaultSpec":
        """Reject settings that would silently do nothing."""
        if self.window is not None and self.window[0] > self.window[1]:
            raise ValueError(f"window start {self.window[0]} is after its end {self.window[1]}")
        for option, kinds in _OPTION_KINDS.items():
            if getattr(self, option) is not None and self.kind not in kinds:
                raise ValueError(f"{option} only applies to {'/'.join(sorted(kinds))} faults, not {self.kind}")
        return self

    @property
    def body_bytes(self) -> int:
        """The oversize answer's size, or the size a gzip bomb inflates to."""
        if self.size_bytes is not None:
            return self.size_bytes
        return GZIP_BOMB_BYTES if self.kind == "gzip_bomb" else OVERSIZE_BYTES

    def active(self, elapsed_s: float) -> bool:
        """Tell whether the fault's time window covers `elapsed_s` seconds since start."""
        return self.window is None or self.window[0] <= elapsed_s < self.window[1]


class ModelConfig(BaseModel):
    """Settings for one model name: its latency, context size and own faults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_s: float | None = Field(default=None, ge=0.0)
    jitter_s: float | None = Field(default=None, ge=0.0)
    max_context_chars: int | None = Field(default=None, gt=0)
    faults: list[FaultSpec] = Field(default_factory=list)


class SimConfig(BaseModel):
    """The whole simulator configuration, as accepted by `--faults` and `PUT /_sim/faults`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_s: float = Field(default=0.0, ge=0.0)
    jitter_s: float = Field(default=0.0, ge=0.0)
    # SecretStr keeps the key out of reprs, logs and dumped config.
    require_key: SecretStr | None = None
    seed: int | None = None
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    faults: list[FaultSpec] = Field(default_factory=list)

    def latency_for(self, model: str, rng: random.Random) -> float:
        """Draw the delay before `model` answers: its latency plus uniform jitter."""
        mc = self.models.get(model)
        base = mc.latency_s if mc is not None and mc.latency_s is not None else self.latency_s
        jitter = mc.jitter_s if mc is not None and mc.jitter_s is not None else self.jitter_s
        if jitter <= 0.0:
            return base
        return max(0.0, base + rng.uniform(-jitter, jitter))

    def max_context_for(self, model: str) -> int | None:
        """Return the context size in characters of `model`, None if unlimited."""
        mc = self.models.get(model)
        return mc.max_context_chars if mc is not None else None


def describe_errors(exc: ValidationError) -> list[str]:
    """Turn a config validation error into `field: problem` lines.

    Input values are left out so a rejected config never echoes a key back.
    """
    return [
        f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    ]


def forced_fault(question: str, model: str) -> FaultSpec | None:
    """Return the fault a `[[sim:KIND]]` marker in the question forces on `model`, if any."""
    if "[[sim:" not in question:  # cheap pre-check: most questions carry no marker
        return None
    for match in _MARKER.finditer(question):
        kind, target = match.group(1), match.group(2)
        if kind in MARKER_KINDS and (target is None or target == model):
            return _FORCED[kind]
    return None


def pick_fault(
    config: SimConfig,
    model: str,
    question: str,
    context_chars: int,
    elapsed_s: float,
    rng: random.Random,
) -> FaultSpec | None:
    """Choose the fault for one request, or None for a normal answer.

    Order: a marker in the question, then an oversized context, then the
    model's own faults, then the global ones; the first that fires wins.
    """
    forced = forced_fault(question, model)
    if forced is not None:
        return forced
    limit = config.max_context_for(model)
    if limit is not None and context_chars > limit:
        return _CONTEXT_LENGTH
    mc = config.models.get(model)
    if mc is not None:
        chosen = _first_firing(mc.faults, elapsed_s, rng)
        if chosen is not None:
            return chosen
    return _first_firing(config.faults, elapsed_s, rng)


def _first_firing(faults: Sequence[FaultSpec], elapsed_s: float, rng: random.Random) -> FaultSpec | None:
    """Return the first fault in its window whose probability draw succeeds."""
    for fault in faults:
        # Draw only for faults in their window, so a dormant fault does not
        # shift the random sequence of the others.
        if fault.active(elapsed_s) and (fault.probability >= 1.0 or rng.random() < fault.probability):
            return fault
    return None


_CONTEXT_LENGTH = FaultSpec(kind="context_length")
# Markers force faults with default settings; built once, as specs are immutable.
_FORCED: dict[str, FaultSpec] = {k: FaultSpec.model_validate({"kind": k}) for k in MARKER_KINDS}
