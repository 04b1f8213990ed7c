"""Helpers for in-process ladder tests: a real Ladder on real Redis and the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from askq.config.settings import Settings, load_settings
from askq.core.connection import connect_async
from askq.core.job import JobSpec
from askq.stack import default_providers
from askq.workers.breaker import Breaker
from askq.workers.cache import AnswerCache
from askq.workers.ladder import Ladder, LadderResult
from askq.workers.ratelimit import RateLimiter

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


def run_ladder(settings: Settings, specs: list[JobSpec], sleep: SleepRecorder | None = None,
               concurrent: bool = False) -> list[LadderResult]:
    """Run jobs through a fresh Ladder (as a worker process would) and return their results."""

    async def main() -> list[LadderResult]:
        client = connect_async(settings)
        ladder = Ladder(settings, Breaker(client, settings.breaker), RateLimiter(client, settings.rate_limit_wait_s),
                        AnswerCache(client, settings.cache_ttl_s, settings.prompt_version),
                        sleep=sleep or SleepRecorder())
        try:
            if concurrent:
                return list(await asyncio.gather(*(ladder.run(s) for s in specs)))
            return [await ladder.run(s) for s in specs]
        finally:
            await ladder.aclose()
            await client.aclose()

    return asyncio.run(main())


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def job(question: str, context: list[str] | None = None) -> JobSpec:
    return JobSpec.new(question, context=context)
