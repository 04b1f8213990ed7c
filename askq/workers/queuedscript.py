"""A Lua script that can ride on another command's pipeline, by EVALSHA.

A redis-py Script run on a pipeline costs an extra SCRIPT EXISTS round trip, so askq queues
its hot-path scripts by EVALSHA. A NOSCRIPT reply (after a Redis restart or SCRIPT FLUSH)
means the script did not run: it is run again through the Script, which loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import NoScriptError

Args = Sequence[str | int | float]


class QueuedScript:
    """One registered script: run alone, or queued on a pipeline and its reply settled after."""

    def __init__(self, client: aredis.Redis, source: str) -> None:
        self._script = client.register_script(source)

    async def __call__(self, keys: Sequence[str], args: Args) -> Any:
        return await self._script(keys=list(keys), args=list(args))

    def queue(self, pipe: Any, keys: Sequence[str], args: Args) -> None:
        """Queue the script on a pipeline (executed with raise_on_error=False)."""
        pipe.evalsha(self._script.sha, len(keys), *keys, *args)

    async def reply(self, reply: Any, keys: Sequence[str], args: Args) -> Any:
        """The queued script's reply; NOSCRIPT runs it again (loading it), any other error raises."""
        if isinstance(reply, NoScriptError):
            return await self(keys, args)
        if isinstance(reply, Exception):
            raise reply
        return reply
