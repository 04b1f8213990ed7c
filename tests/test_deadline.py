"""A delivery that outlives run_timeout_s gives up its slot and lease: durable retry, then exhausted."""

from __future__ import annotations

from pathlib import Path

import redis

from askq.config.settings import load_settings
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.job import JobState
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers


def test_hung_run_is_cut_at_the_run_timeout_and_ends_exhausted(
    stack: Stack, r: redis.Redis, sim: Sim, tmp_path: Path
) -> None:
    stack.start_worker(
        concurrency=4,
        ASKQ_RUN_TIMEOUT_S="2",
        ASKQ_DURABLE_RETRY_BASE_S="0.5",
        ASKQ_MAX_JOB_AGE_S="8",
    )
    wait_workers(r, 1)
    client = Client(load_settings(redis_url=stack.redis_url, var_dir=tmp_path))
    # Both tiers hang far past the run timeout (the provider timeout is 5 s, times 3 attempts).
    job_id = client.submit("Where is my refund? [[sim:hang]]")

    wait_for(lambda: int(r.hget(keys.job(job_id), "retries") or 0) >= 1, 30, what="a durable retry")
    assert "run_timeout_s" in (r.hget(keys.job(job_id), "error") or "")

    view = client.wait(job_id, timeout=60)
    assert view.state is JobState.DEAD
    assert view.reason is DeadReason.EXHAUSTED
    assert sim.stats()["responses"].get("secondary", {}).get("ok", 0) == 0
