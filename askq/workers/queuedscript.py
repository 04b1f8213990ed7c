"""A Lua script that can ride on another command's pipeline, by EVALSHA.

A redis-py Script run on a pipeline costs an extra SCRIPT EXISTS round trip, so askq queues
its hot-path scripts by EVALSHA. A NOSCRIPT reply (after a Redis restart or SCRIPT FLUSH)
means the script did not run: it is run again through the Script, which loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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

    def call(self, keys: Sequence[str], args: Args) -> ScriptCall:
        """One run of the script with these keys and args, as a value to queue (or run) later."""
        return ScriptCall(self, tuple(keys), tuple(args))

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


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One run of a QueuedScript: queued on a pipeline and its reply settled after, or run alone."""

    script: QueuedScript
    keys: tuple[str, ...]
    args: tuple[str | int | float, ...]

    def queue(self, pipe: Any) -> None:
        self.script.queue(pipe, self.keys, self.args)

    async def settle(self, reply: Any) -> Any:
        """The queued run's reply; NOSCRIPT runs it again (loading it), any other error raises."""
        return await self.script.reply(reply, self.keys, self.args)

    async def run(self) -> Any:
        return await self.script(self.keys, self.args)
