"""Every private (or undocumented) kombu and Celery method askq overrides or calls, with the
signature it was written against (kombu 5.7, Celery 5.7; pinned in pyproject.toml).

A new release may change any of these without notice. tests/test_broker_contract.py compares
each recorded signature with the installed one and names the method that changed, so an
upgrade fails its tests, never production. Raise the pins only with that test green.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Private:
    """One method of kombu or Celery askq relies on, where, and why."""

    owner: str  # "module:Class", or "module:function" with an empty name
    name: str
    signature: str
    used_by: str

    @property
    def qualname(self) -> str:
        return f"{self.owner}.{self.name}" if self.name else self.owner

    def installed(self) -> str:
        """The method's signature as installed now (raises if the class or method is gone)."""
        module, attr = self.owner.split(":")
        found = getattr(importlib.import_module(module), attr)
        return str(inspect.signature(getattr(found, self.name) if self.name else found))


_TRANSPORT = "askq/broker/transport.py"
_CONSUMER = "askq/broker/consumer.py"
_QOS = _TRANSPORT + " QoS (override)"

RELIED_ON: tuple[Private, ...] = (
    Private("kombu.transport.redis:QoS", "append", "(self, message, delivery_tag)", _QOS),
    Private("kombu.transport.redis:QoS", "pipe_or_acquire", "(self, pipe=None, client=None)", _QOS + " append"),
    Private("kombu.transport.redis:QoS", "restore_unacked", "(self, client=None)", _QOS),
    Private("kombu.transport.redis:QoS", "ack", "(self, delivery_tag)", _QOS),
    Private("kombu.transport.redis:QoS", "reject", "(self, delivery_tag, requeue=False)", _QOS),
    # QoS.released() reads the channel's `_pool` and `connection.client`; kombu fails in this one
    # when the client is gone (the case released() detects).
    Private("kombu.transport.redis:Channel", "_connparams", "(self, asynchronous=False)", _TRANSPORT + " QoS.released"),
    Private("kombu.transport.redis:Channel", "_get_pool", "(self, asynchronous=False)", _TRANSPORT + " QoS.released"),
    # Reads its local `item` from a traceback (transport._popped_entry).
    Private("kombu.transport.redis:Channel", "_brpop_read", "(self, **options)", _TRANSPORT + " Channel (override)"),
    Private("kombu.transport.redis:Transport", "_deliver", "(self, message, queue)", _TRANSPORT + " (override)"),
    # The virtual Message keeps the parsed envelope as `_raw` (envelope.raw_text, named_job).
    Private("kombu.transport.virtual.base:Message", "__init__", "(self, payload, channel=None, **kwargs)",
            "askq/broker/envelope.py raw_text"),
    Private("kombu.message:Message", "ack_log_error", "(self, logger, errors, multiple=False)", _CONSUMER),
    Private("kombu.message:Message", "reject_log_error", "(self, logger, errors, requeue=False)", _CONSUMER),
    # nodename.unique_nodename renames a worker that kept Celery's default node name.
    Private("celery.utils.nodenames:default_nodename", "", "(hostname: 'str', default_name: 'str' = 'celery') -> 'str'",
            "askq/broker/nodename.py"),
    Private("celery.app.trace:setup_worker_optimizations", "", "(app, hostname=None)", "askq/broker/nodename.py"),
    Private("celery.worker.consumer.consumer:Consumer", "create_task_handler",
            "(self, promise=<class 'vine.promises.promise'>)", _CONSUMER + " (override)"),
    Private("celery.worker.consumer.consumer:Consumer", "on_decode_error", "(self, message, exc)",
            _CONSUMER + " (override)"),
    Private("celery.worker.consumer.consumer:Consumer", "on_unknown_message", "(self, body, message)",
            _CONSUMER + " (override)"),
    Private("celery.worker.consumer.consumer:Consumer", "on_unknown_task", "(self, body, message, exc)",
            _CONSUMER + " (override)"),
    Private("celery.worker.consumer.consumer:Consumer", "on_invalid_task", "(self, body, message, exc)",
            _CONSUMER + " (override)"),
)


def drift(relied: tuple[Private, ...] = RELIED_ON) -> list[str]:
    """One line per relied-on method whose installed signature is not the recorded one (or is gone)."""
    changed = []
    for p in relied:
        try:
            now = p.installed()
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            changed.append(f"{p.qualname} ({p.used_by}): gone: {type(exc).__name__}: {exc}")
            continue
        if now != p.signature:
            changed.append(f"{p.qualname} ({p.used_by}): recorded {p.signature}, installed {now}")
    return changed
