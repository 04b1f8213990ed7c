"""The simulator configurations the chaos phases use, and the call that switches between them.

The random fault mix is an explicit list of the classic kinds, not `sim.faults.FAULT_KINDS`:
hostile kinds added there (trickle, oversize, gzip bomb, redirect) have phases of their own and
must never enter the mix by accident.
"""

from __future__ import annotations

from typing import Any, get_args

import httpx

from askq.sim.faults import FaultKind

CLASSIC_FAULT_KINDS: tuple[str, ...] = (
    "rate_limit", "server_error", "timeout", "hang", "reset", "malformed", "truncated", "empty",
    "bad_request", "auth", "forbidden", "not_found", "content_policy", "context_length",
)

# The slow-provider phase's fault: `trickle` (reply sent a byte at a time) once the simulator
# has it, else `hang` (nothing sent for a long time) as a stand-in. The one switch between them;
# read from the kinds the simulator accepts (FaultKind), which may list kinds FAULT_KINDS leaves out.
SLOW_FAULT_KIND = "trickle" if "trickle" in get_args(FaultKind) else "hang"


def mix(share: float = 0.30, hang_s: float = 8.0) -> dict[str, Any]:
    """Every classic kind drawn independently, so that `share` of the calls get some fault."""
    p = 1 - (1 - share) ** (1 / len(CLASSIC_FAULT_KINDS))
    return {"faults": [{"kind": kind, "probability": round(p, 5), "hang_s": hang_s, "retry_after_s": 0.5}
                       for kind in CLASSIC_FAULT_KINDS]}


def healthy(latency_s: float, jitter_s: float = 0.0) -> dict[str, Any]:
    return {"latency_s": latency_s, "jitter_s": jitter_s, "faults": []}


def failing(latency_s: float) -> dict[str, Any]:
    """Every model answers 500 (after its latency), so every tier fails and jobs get the default."""
    return {"latency_s": latency_s, "faults": [{"kind": "server_error", "probability": 1.0}]}


def slow_primary(latency_s: float, hang_s: float = 300.0) -> dict[str, Any]:
    """The primary model answers slowly on every call (trickle or hang); the others are healthy."""
    fault: dict[str, Any] = {"kind": SLOW_FAULT_KIND, "probability": 1.0}
    if SLOW_FAULT_KIND == "trickle":
        fault["trickle_bytes_per_s"] = 1.0
    else:
        fault["hang_s"] = hang_s
    return {"latency_s": latency_s, "models": {"primary": {"faults": [fault]}}}


def put(sim_url: str, config: dict[str, Any], seed: int | None = 11) -> None:
    """Replace the running simulator's configuration (`PUT /_sim/faults`); raises if refused."""
    base = sim_url.removesuffix("/").removesuffix("/v1")
    body = dict(config) | ({"seed": seed} if seed is not None else {})
    reply = httpx.put(f"{base}/_sim/faults", json=body, timeout=10.0)
    if reply.status_code != 200:
        raise RuntimeError(f"simulator refused the fault config: {reply.status_code} {reply.text}")
