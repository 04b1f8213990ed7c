"""The worker loop's default executor: a thread pool that runs LangChain's result building inline.

ChatOpenAI hands every response to the loop's default executor to turn it into a ChatResult
(`run_in_executor(None, self._create_chat_result, ...)`): a thread hop per LLM call that costs
more CPU (queueing, waking a thread, waking the loop again) than the few hundred microseconds of
work it moves. That one function runs inline here; everything else submitted (DNS lookups,
`asyncio.to_thread` with blocking Redis calls) still goes to the threads, so the loop never
blocks on I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Pure CPU, no I/O: cheaper on the loop thread than the hop to another thread.
INLINE_METHODS = frozenset({"_create_chat_result"})


def runs_inline(fn: Callable[..., Any]) -> bool:
    """Is fn LangChain's wrapper around one of INLINE_METHODS (bound to a chat model)?

    langchain_core's run_in_executor submits partial(context.run, wrapper), where wrapper closes
    over the function; anything shaped otherwise goes to the threads, as it would by default.
    """
    if isinstance(fn, functools.partial) and fn.args:
        fn = fn.args[0]
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            target = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if getattr(target, "__name__", None) in INLINE_METHODS and hasattr(target, "__self__"):
            return True
    return False


class LoopExecutor(ThreadPoolExecutor):
    """Default executor of a worker's event loop (see the module docstring)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if not runs_inline(fn):
            return super().submit(fn, *args, **kwargs)
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting coroutine, as a pool thread would
            future.set_exception(exc)
        return future
