"""Helpers for in-process ladder tests: jobs run through the worker's own path on real Redis and the simulator.

run_ladder writes each job as SUBMIT does and runs one delivery of it with
askq.workers.execution.run_delivery on a Runtime in this process, as a worker process runs it: the
claim carries the ladder's reads, the ladder walks the tiers through the real ChatOpenAI client
over HTTP, and the result write (or dead letter, or durable retry) carries what it handed back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis

from askq.broker import envelope
from askq.config.settings import Settings, load_settings
from askq.core import keys, scripts
from askq.core.job import JobSpec, payload_text
from askq.stack import default_providers
from askq.workers.execution import DeliveryRun, run_delivery
from askq.workers.ladder import LadderResult
from askq.workers.runtime import Runtime

T = TypeVar("T")


def settings_with(base: Settings, sim_url: str, providers: list[dict[str, Any]] | None = None,
                  **overrides: Any) -> Settings:
    """Test settings on the session Redis and the simulator, with the given overrides."""
    assert base.redis_url is not None
    return load_settings(
        redis_url=base.redis_url.get_secret_value(),
        var_dir=base.var_dir,
        providers=providers or default_providers(sim_url, timeout_s=2.0),
        **overrides,
    )


class SleepRecorder:
    """An injected sleep that records each wait instead of sleeping through it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def write_job(client: redis.Redis, settings: Settings, spec: JobSpec) -> None:
    """Create the job and its message exactly as SUBMIT does, with no check of the text."""
    payload = spec.model_dump(mode="json")
    created = scripts.register(client, "submit")(
        keys=[keys.job(spec.id), keys.PENDING, settings.queue, keys.STATS, keys.EXPIRIES],
        args=[payload_text(payload), envelope.build(settings.queue, payload, dispatch=1), time.time(), spec.id,
              settings.queue])
    assert created == 1


def run_ladder(settings: Settings, specs: list[JobSpec], sleep: SleepRecorder | None = None,
               concurrent: bool = False) -> list[LadderResult]:
    """Run one delivery of each job (as a worker process would) and return the ladder's walks."""
    rt = Runtime(settings, sleep=sleep or SleepRecorder())
    try:
        for spec in specs:
            write_job(rt.sync_redis, settings, spec)

        async def main() -> list[DeliveryRun]:
            runs = [run_delivery(rt, s, 1, f"task-{s.id}") for s in specs]
            if concurrent:
                return list(await asyncio.gather(*runs))
            return [await run for run in runs]

        walks = [d.ladder for d in rt.call(main(), timeout=120)]
        assert all(walk is not None for walk in walks), walks
        return [walk for walk in walks if walk is not None]
    finally:
        rt.close()


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def job(question: str, context: list[str] | None = None) -> JobSpec:
    return JobSpec.new(question, context=context)
