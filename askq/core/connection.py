"""Redis clients built from settings, the embedded server started when none is configured."""

from __future__ import annotations

import redis
import redis.asyncio as aredis

from askq.config.settings import Settings
from askq.core.redisserver import ensure_url


def redis_url(settings: Settings) -> str:
    """The URL every askq process of this deployment talks to."""
    configured = settings.redis_url.get_secret_value() if settings.redis_url else None
    return ensure_url(configured, settings.var_dir)


def connect(settings: Settings, url: str | None = None) -> redis.Redis:
    """A synchronous client (producers, CLI, reaper) with explicit timeouts and retry on reconnect."""
    return redis.Redis.from_url(
        url or redis_url(settings),
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def connect_async(settings: Settings, url: str | None = None, max_connections: int = 64) -> aredis.Redis:
    """An asyncio client for the worker's event loop."""
    return aredis.Redis.from_url(
        url or redis_url(settings),
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        max_connections=max_connections,
    )
