"""The Celery configuration of a process that only watches the workers: Flower.

Flower picks its Broker page's API by the scheme of the app's broker URL as kombu renders it
(flower/views/__init__.py get_broker, flower/utils/broker.py Broker: `redis`, `rediss`,
`sentinel`...). askq's workers name their transport by class (askq/workers/refusals.py), which
kombu renders as the scheme, so Flower said "'askq.workers.refusals:Transport' broker is not
supported" and showed no queue. Flower consumes only Celery's own traffic (events, control
replies), which askq's transport passes through untouched: it runs on kombu's own Redis
transport, and its Broker page reads the queue lengths from the same Redis.
"""

from __future__ import annotations

from typing import Any


def watch_only(app: Any) -> None:
    """Point a Celery app that consumes no tasks at kombu's own transport for its broker URL."""
    app.conf.broker_transport = None
