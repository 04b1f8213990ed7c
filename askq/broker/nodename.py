"""One name per worker process, the same in Flower, `askq workers` and the metrics.

askq names a worker by Celery's node name (`name@host`), which Flower shows from the worker's
events. Celery's default node name, `celery@<host>`, is the same for every worker on a host
(`celery -A askq.workers worker` without `-n`), yet askq's heartbeats and reaper need one name
per process: a worker that kept the default is renamed `celery-<pid>@<host>` while Celery sets
up (its `celeryd_init` signal, before the name is used for its queues, events and mailbox).
"""

from __future__ import annotations

import os
from typing import Any

from celery.app import trace
from celery.utils.nodenames import default_nodename


def unique_nodename(worker: Any) -> str:
    """Give a Celery worker being set up a node name no other process shares; returns it."""
    name = str(worker.hostname)
    if name != default_nodename(None):
        return name  # chosen with -n / --hostname (askq worker --name, the Stack): kept as given
    user, _, host = name.partition("@")
    name = f"{user}-{os.getpid()}@{host}"
    worker.hostname = name
    # Celery already handed the default to its task tracer (worker.py on_before_init).
    trace.setup_worker_optimizations(worker.app, name)
    return name
