"""Measure how much one provider call grows its process's peak RSS (run by tests/test_hostile.py).

python -m tests.memprobe SIM_URL MODEL MAX_RESPONSE_BYTES

A fresh process, so its peak RSS is its own: one ordinary call first (imports, connection
pool, first-use allocations) to the simulator's model "primary", then the call under test to
MODEL, whose faults the test configured. Prints one JSON line: the outcome (the askq error
class, or "answered") and how far the peak grew, in MiB.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys

from askq.config.settings import ProviderSettings
from askq.core.job import JobSpec
from askq.workers.chain import Chain


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _chain(url: str, model: str, cap: int) -> Chain:
    return Chain(ProviderSettings(name=model, base_url=url, model=model, timeout_s=60, max_response_bytes=cap))


async def main(url: str, model: str, cap: int) -> dict[str, object]:
    warm, chain = _chain(url, "primary", cap), _chain(url, model, cap)
    try:
        await warm.ask(JobSpec.new("A warm-up question"))
        before = _peak_mib()
        try:
            answer = await chain.ask(JobSpec.new("How much memory?"))
            outcome, chars = "answered", len(answer.text)
        except Exception as exc:  # the outcome is what is measured
            outcome, chars = str(getattr(exc, "error_class", type(exc).__name__)), 0
        after = _peak_mib()
    finally:
        await warm.aclose()
        await chain.aclose()
    return {"outcome": outcome, "answer_chars": chars, "before_mib": round(before, 1),
            "growth_mib": round(after - before, 1)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
