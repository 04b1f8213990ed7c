"""askq's Lua scripts, loaded by name: one file per script in askq/core/lua/.

The scripts that move a job between states check what they expect (state, dispatch number,
lease token) and do nothing otherwise, so redelivered, replayed, reclaimed or late work can
never write twice.

Every file starts with its contract in comments (`-- KEYS:`, `-- ARGV:`, `-- Returns:`), so a
script can be read, and run, on its own. Loading a script by name does two things to its text:
an `-- Includes: NAME` line in that header puts NAME.lua's text first (callback_hook.lua, the
Lua function the scripts that end a job call after their terminal write), and each `<NAME>`
placeholder becomes a key name from askq/core/keys.py (PLACEHOLDERS), so Redis key names are
spelled out in keys.py only.

`register` gives redis-py's Script: EVALSHA, loading the script when Redis answers NOSCRIPT.
`QueuedScript` also queues a script on another command's pipeline by EVALSHA, and runs it again
(loading it) when the queued call was answered NOSCRIPT.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, overload

import redis
import redis.asyncio as aredis
from redis.commands.core import AsyncScript, Script
from redis.exceptions import NoScriptError

from askq.core import keys

# Placeholder -> key name (or prefix) it stands for in a script's text.
PLACEHOLDERS = {
    "SEQ": keys.CALLBACKS_SEQ,
    "CALLBACK": keys.callback(""),
    "DUE": keys.CALLBACKS_DUE,
}

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*)>")
# Any line that says it includes is read, whatever follows (CR of a CRLF checkout, spaces): one
# that silently did not match would leave a terminal script calling an undefined function.
_INCLUDE = re.compile(r"^--[ \t]*Includes:[ \t]*(\S*)\s*$", re.MULTILINE)


def names() -> list[str]:
    """The name of every script file in askq/core/lua/, sorted."""
    folder = resources.files("askq.core").joinpath("lua")
    return sorted(entry.name.removesuffix(".lua") for entry in folder.iterdir() if entry.name.endswith(".lua"))


def text(name: str) -> str:
    """The file askq/core/lua/NAME.lua as it is: header, body, placeholders."""
    if not _NAME.fullmatch(name):
        raise LookupError(f"not a Lua script name: {name!r} (lower-case letters, digits and _)")
    path = resources.files("askq.core").joinpath("lua", f"{name}.lua")
    if not path.is_file():
        raise LookupError(f"no Lua script {name!r}: askq/core/lua/{name}.lua does not exist")
    return path.read_text(encoding="utf-8")


def header(lua: str) -> str:
    """The comment lines a script starts with: its contract."""
    lines = []
    for line in lua.splitlines(keepends=True):
        if not line.startswith("--"):
            break
        lines.append(line)
    return "".join(lines)


def includes(name: str) -> list[str]:
    """The scripts NAME's header says it includes, in order."""
    return included_by(text(name))


def included_by(lua: str) -> list[str]:
    """The scripts a script's header (given as text) says it includes; LookupError for a bad name."""
    found = _INCLUDE.findall(header(lua))
    for name in found:
        if not _NAME.fullmatch(name):
            raise LookupError(f"not a Lua script name: {name!r} (lower-case letters, digits and _)")
    return found


@functools.cache
def source(name: str) -> str:
    """The Lua Redis runs for NAME: its includes first, then its own text, with key names filled in."""
    lua = "".join(text(included) for included in includes(name)) + text(name)

    def key(match: re.Match[str]) -> str:
        try:
            return PLACEHOLDERS[match[1]]
        except KeyError:
            raise LookupError(f"{name}.lua: unknown placeholder <{match[1]}> (known: "
                              f"{', '.join(sorted(PLACEHOLDERS))})") from None

    return _PLACEHOLDER.sub(key, lua)


@overload
def register(client: aredis.Redis, name: str) -> AsyncScript: ...
@overload
def register(client: redis.Redis, name: str) -> Script: ...
def register(client: redis.Redis | aredis.Redis, name: str) -> Script | AsyncScript:
    """The script NAME on this client (run by EVALSHA, loaded on NOSCRIPT)."""
    return client.register_script(source(name))


Args = Sequence[str | int | float]


class QueuedScript:
    """One script that can also ride on another command's pipeline, by EVALSHA.

    A redis-py Script run on a pipeline costs an extra SCRIPT EXISTS round trip, so askq queues
    its hot-path scripts by EVALSHA. A NOSCRIPT reply (after a Redis restart or SCRIPT FLUSH)
    means the script did not run: it is run again through the Script, which loads it.
    """

    def __init__(self, client: aredis.Redis, name: str) -> None:
        self._script = register(client, name)

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
