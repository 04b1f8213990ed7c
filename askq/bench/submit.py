"""Producer throughput: one job per round trip against pipelined bulk submission, one producer."""

from __future__ import annotations

import time
from typing import Any

from askq.config.settings import load_settings
from askq.core import keys
from askq.core.connection import connect
from askq.producers.client import Client
from askq.stack import Stack


def measure_submit(stack: Stack, single: int = 2000, bulk: int = 20000, chunk: int = 1000,
                   durability: str = "relaxed") -> dict[str, Any]:
    """Jobs/s for `single` submit() calls and for `bulk` jobs through submit_many(), no workers running."""
    settings = load_settings(redis_url=stack.redis_url, var_dir=stack.var_dir, durability=durability)
    client = Client(settings, connect(settings, stack.redis_url))
    try:
        t0 = time.perf_counter()
        for i in range(single):
            client.submit(f"How do I reset my password? (one by one {i})")
        one_by_one = single / (time.perf_counter() - t0)
        jobs = [{"question": f"Where is my order? (bulk {i})"} for i in range(bulk)]
        t0 = time.perf_counter()
        for start in range(0, bulk, chunk):
            client.submit_many(jobs[start : start + chunk])
        in_bulk = bulk / (time.perf_counter() - t0)
        queued = client.redis.llen(settings.queue)
    finally:
        # Nothing will answer these jobs: leave an empty store behind.
        client.redis.delete(settings.queue, keys.PENDING)
        client.close()
    return {"one_by_one_jobs_per_s": round(one_by_one), "bulk_jobs_per_s": round(in_bulk),
            "single_jobs": single, "bulk_jobs": bulk, "durability": durability, "bulk_chunk": chunk, "queued": queued}
