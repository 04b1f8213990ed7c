"""Queue depth as kombu's Redis transport stores a queue: a list named after the queue.

Kombu puts a message of priority 0 (the only one askq's envelope uses) on the bare name; other
priorities would go to `<queue>\\x06\\x16<n>` lists, which askq never writes.
"""

from __future__ import annotations

from typing import Any


def queue_depth(pipe: Any, queue: str) -> Any:
    """Messages waiting on a queue (LLEN), on a client or added to a pipeline."""
    return pipe.llen(queue)
