"""Kombu's Redis transport, made to dead-letter every queue entry askq will not run.

Relies on kombu 5.7's Redis transport (kombu/transport/redis.py, virtual/base.py): the
channel pops an entry with BRPOP in `_brpop_read`, parses it as JSON and hands it to
`Transport._deliver`, which builds a Message (decoding, even decompressing its body), adds it
to the unacked hash and calls the consumer; Celery's strategy then reads its headers and body.
Any of these steps raises on an entry of the wrong shape, inside the consumer's event loop,
after BRPOP already removed the entry: the worker stopped, or restarted its connection, and
the entry was lost (issue 9 A). So every entry is first checked whole against askq's message
contract (core.message.parse_envelope); one that fails is dead-lettered here, before kombu
records it anywhere, so there is nothing to acknowledge. Whatever still fails in kombu is
dead-lettered too; what fails later, in Celery, is caught in askq/workers/consumer.py.

Its QoS also survives a channel closed after a Redis restart released the connection: restore,
ack and reject there raise AttributeError in kombu, which would stop the worker process.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps as kombu_dumps

from askq.config.logging import scrub
from askq.core import clock
from askq.core.deadletter import MAX_RAW_CHARS
from askq.core.errors import InvalidJobError
from askq.core.message import parse_envelope
from askq.workers.consumer import BROKER_ERRORS, dead_letter_entry, dead_letter_raw

log = structlog.get_logger("askq.transport")


class QoS(kombu_redis.QoS):
    """Kombu's unacked bookkeeping, surviving a close after its connection was released."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        # kombu 5.7 stamps the unacked index with this host's clock; the reaper judges the stamp
        # on Redis's (askq/core/clock.py): a host 30 s behind would look abandoned at once.
        delivery = message.delivery_info
        raw = kombu_dumps([message._raw, delivery["exchange"], delivery["routing_key"]])  # type: ignore[no-untyped-call]
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: clock.now()}).hset(
                self.unacked_key, delivery_tag, raw).execute()

    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except AttributeError:
            # When Redis goes away, Celery closes the connection and then its default channel,
            # whose restore needs the connection's parameters: kombu raises AttributeError and
            # the worker process exits. The entries stay in `unacked`; the reaper restores
            # those whose job was never claimed (askq/core/scripts.py RECOVER).
            log.warning("unacked_restore_skipped", reason="connection already released")


    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except AttributeError:
            # A task that finished after Redis went away acks on a channel already closed (its
            # connection is gone): kombu raises AttributeError, which would stop the worker.
            # The entry stays in `unacked`; the reaper drops it once it sees the job finished.
            log.warning("ack_on_closed_channel", delivery_tag=str(delivery_tag))

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]
        except AttributeError:
            log.warning("reject_on_closed_channel", delivery_tag=str(delivery_tag))


class Channel(kombu_redis.Channel):
    """A Redis channel that never lets an unreadable queue entry reach the consumer."""

    QoS = QoS

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        except UnicodeDecodeError as exc:
            raw = exc.object.decode("utf-8", errors="replace") if isinstance(exc.object, bytes) else ""
            dead_letter_raw(raw, f"queue entry is not UTF-8 text: {exc.reason}")
        except json.JSONDecodeError as exc:
            dead_letter_raw(exc.doc, f"queue entry is not a JSON message envelope: {exc}")
        except RecursionError as exc:
            dead_letter_raw(_popped_entry(exc), "queue entry is JSON nested too deeply to read")
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits (Python's limit)
            dead_letter_raw(_popped_entry(exc), f"queue entry is JSON askq cannot read: {exc}")
        return True


def _is_celery_own(queue: str) -> bool:
    """Whether a queue carries Celery's own traffic, not tasks: remote control and its replies
    (kombu's pidbox: `<node>.celery.pidbox`, `<oid>.reply.celery.pidbox`) and events (`celeryev.*`)."""
    return queue.endswith(".pidbox") or queue.startswith("celeryev.")


def _popped_entry(exc: BaseException) -> str:
    """The entry kombu's `_brpop_read` popped (its local `item`), from the traceback of its failure.

    json.loads raises RecursionError on deep nesting without the text (unlike JSONDecodeError's
    `doc`), and the entry is already off the queue; its first MAX_RAW_CHARS are all the record
    keeps, so they are read from kombu 5.7's frame. Empty if that frame is not found.
    """
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_brpop_read":
            item = tb.tb_frame.f_locals.get("item")
            if isinstance(item, bytes):
                return item[:MAX_RAW_CHARS].decode("utf-8", errors="replace")
            if isinstance(item, str):
                return item[:MAX_RAW_CHARS]
        tb = tb.tb_next
    return ""


class Transport(kombu_redis.Transport):
    """Kombu's Redis transport with askq's Channel and the message contract checked before delivery."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        if not _is_celery_own(queue):
            try:
                parse_envelope(message)
            except InvalidJobError as exc:
                dead_letter_entry(message, str(exc))
                return
        try:
            super()._deliver(message, queue)  # type: ignore[no-untyped-call]
        except BROKER_ERRORS:
            raise
        except Exception as exc:
            # Passed the contract yet kombu or Celery raised on it: still this entry's fault.
            log.warning("delivery_failed", error=scrub(repr(exc))[:500])
            dead_letter_entry(message, f"message could not be delivered: {type(exc).__name__}: {exc}")
