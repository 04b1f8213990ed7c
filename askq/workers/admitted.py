"""Jobs the transport checked on delivery, handed to the task that runs them: one check per delivery.

The transport checks each entry's job against the job contract before kombu records it (so a
refused entry's dead letter keeps the entry as it was on the queue, askq/broker/transport.py).
The task then needs the same parsed job. With the thread pool both run in this process: the
transport leaves the parsed job here under the message's task id, with the job as it was
decoded, and the task takes it if its own decoded job is equal (a dict comparison instead of a
second validation). Not found (a prefork child, an entry evicted, a message restored by the
reaper into another worker): the task checks the job itself, exactly as before.

Bounded: an entry admitted but never run (Celery refused it later, the connection dropped) is
evicted by newer ones; a worker holds at most its prefetch (one per slot) in flight.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from askq.broker.envelope import Envelope
from askq.core.job import JobRequest, JobSpec
from askq.core.message import parse_job, parse_submission

# Far above a worker's prefetch (worker_concurrency x 1), far below what could grow a worker.
CAPACITY = 256

_lock = threading.Lock()
_checked: OrderedDict[str, tuple[Any, JobSpec | JobRequest]] = OrderedDict()


def admit(envelope: Envelope) -> None:
    """Check the job of a well-formed envelope (InvalidJobError refuses it) and keep the result."""
    job, task_id = envelope.job, envelope.task_id
    parsed: JobSpec | JobRequest = parse_submission(job, task_id) if envelope.dispatch is None else parse_job(job)
    with _lock:
        _checked[envelope.task_id] = (envelope.job, parsed)
        _checked.move_to_end(envelope.task_id)
        while len(_checked) > CAPACITY:
            _checked.popitem(last=False)


def take(task_id: str, job: Any) -> JobSpec | JobRequest | None:
    """The checked form of this message's job, if the transport checked this very job; else None."""
    with _lock:
        found = _checked.pop(task_id, None)
    if found is None or found[0] != job:
        return None
    return found[1]
