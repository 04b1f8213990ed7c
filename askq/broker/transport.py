"""Kombu's Redis transport, made to refuse every queue entry askq will not run.

Relies on kombu 5.7's Redis transport (kombu/transport/redis.py, virtual/base.py): the
channel pops an entry with BRPOP in `_brpop_read`, parses it as JSON and hands it to
`Transport._deliver`, which builds a Message (decoding, even decompressing its body), adds it
to the unacked hash and calls the consumer; Celery's strategy then reads its headers and body.
Any of these steps raises on an entry of the wrong shape, inside the consumer's event loop,
after BRPOP already removed the entry: the worker stopped, or restarted its connection, and
the entry was lost (issue 9 A). So every entry is first checked whole against askq's message
format (envelope.parse_envelope); one that fails is refused here, before kombu records it
anywhere, so there is nothing to acknowledge. Whatever still fails in kombu is refused too;
what fails later, in Celery, is caught in askq/broker/consumer.py.

A refusal is handed to `Transport.refuse`, which askq's workers bind to the dead-letter queue
(askq/workers/refusals.py): this package knows kombu, not where askq keeps what it refuses.

Its QoS also survives a channel closed after a Redis restart released the connection (kombu
would raise AttributeError there, stopping the worker process); that case is recognised by its
state before calling kombu, never by catching AttributeError. The private kombu methods
overridden here are listed with their signatures in askq/broker/private.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import structlog
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps as kombu_dumps

from askq.broker.consumer import BROKER_ERRORS
from askq.broker.envelope import Envelope, parse_envelope
from askq.config.logging import scrub
from askq.errors import InvalidJobError

log = structlog.get_logger("askq.transport")

# The most of a popped entry kept when it cannot be parsed (read from kombu's frame below).
POPPED_CHARS = 64 * 1024


class QoS(kombu_redis.QoS):
    """Kombu's unacked bookkeeping, surviving a close after its connection was released."""

    def released(self) -> bool:
        """Whether this channel can no longer reach Redis: Celery released the connection (kombu
        sets its client to None) before the channel made its pool. Kombu would then raise
        AttributeError building one (Channel._connparams reads `connection.client.hostname`)."""
        channel = self.channel
        return channel._pool is None and getattr(channel.connection, "client", None) is None

    def append(self, message: Any, delivery_tag: Any) -> None:
        # kombu stamps the unacked index with this host's clock; the reaper judges the stamp on
        # Redis's (askq/core/clock.py): a host 30 s behind would look abandoned at once. So the
        # stamp comes from the transport's clock (Transport.now, bound by askq's workers). The
        # rest is kombu 5.7's append, including its in-memory record (virtual QoS.append), which
        # prefetch, ack and restore rely on.
        delivery = message.delivery_info
        raw = kombu_dumps([message._raw, delivery["exchange"], delivery["routing_key"]])  # type: ignore[no-untyped-call]
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: self.channel.connection.now()}).hset(
                self.unacked_key, delivery_tag, raw).execute()
        super(kombu_redis.QoS, self).append(message, delivery_tag)  # type: ignore[no-untyped-call]

    def restore_unacked(self, client: Any = None) -> None:
        if client is None and self.released():
            # When Redis goes away, Celery closes the connection and then its default channel,
            # whose restore needs the connection's parameters. The entries stay in `unacked`;
            # the reaper restores those whose job was never claimed (askq/core/scripts.py RECOVER).
            log.warning("unacked_restore_skipped", reason="connection already released")
            return
        super().restore_unacked(client)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: Any) -> None:
        if self.released():
            # A task that finished after Redis went away acks on a channel already closed. The
            # entry stays in `unacked`; the reaper drops it once it sees the job finished.
            log.warning("ack_on_closed_channel", delivery_tag=str(delivery_tag))
            return
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self.released():
            log.warning("reject_on_closed_channel", delivery_tag=str(delivery_tag))
            return
        super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    """A Redis channel that never lets an unreadable queue entry reach the consumer."""

    QoS = QoS

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        except UnicodeDecodeError as exc:
            raw = exc.object.decode("utf-8", errors="replace") if isinstance(exc.object, bytes) else ""
            self.connection.refuse(raw, f"queue entry is not UTF-8 text: {exc.reason}")
        except json.JSONDecodeError as exc:
            self.connection.refuse(exc.doc, f"queue entry is not a JSON message envelope: {exc}")
        except RecursionError as exc:
            self.connection.refuse(_popped_entry(exc), "queue entry is JSON nested too deeply to read")
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits (Python's limit)
            self.connection.refuse(_popped_entry(exc), f"queue entry is JSON askq cannot read: {exc}")
        return True


def is_celery_own(queue: str) -> bool:
    """Whether a queue carries Celery's own traffic, not tasks: remote control and its replies
    (kombu's pidbox: `<node>.celery.pidbox`, `<oid>.reply.celery.pidbox`) and events (`celeryev.*`)."""
    return queue.endswith(".pidbox") or queue.startswith("celeryev.")


def _popped_entry(exc: BaseException) -> str:
    """The entry kombu's `_brpop_read` popped (its local `item`), from the traceback of its failure.

    json.loads raises RecursionError on deep nesting without the text (unlike JSONDecodeError's
    `doc`), and the entry is already off the queue; its first POPPED_CHARS are read from kombu
    5.7's frame. Empty if that frame is not found.
    """
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_brpop_read":
            item = tb.tb_frame.f_locals.get("item")
            if isinstance(item, bytes):
                return item[:POPPED_CHARS].decode("utf-8", errors="replace")
            if isinstance(item, str):
                return item[:POPPED_CHARS]
        tb = tb.tb_next
    return ""


class Transport(kombu_redis.Transport):
    """Kombu's Redis transport with askq's Channel and the message format checked before delivery.

    Abstract: `refuse` says where a refused entry goes, `admit` checks what the envelope
    carries (askq/workers/refusals.py binds both).
    """

    Channel = Channel

    def now(self) -> float:
        """The clock the unacked index is stamped with; askq's workers bind it to Redis's."""
        return time.time()

    def refuse(self, entry: Any, error: str) -> None:
        """Record a queue entry (parsed envelope, kombu Message or text) that will not run; never raises."""
        raise NotImplementedError("askq.broker.transport.Transport.refuse: bind it (askq/workers/refusals.py)")

    def admit(self, envelope: Envelope) -> None:
        """Check the job a well-formed envelope carries; raise InvalidJobError to refuse the entry.

        Here, before kombu records the entry, so a refusal keeps the entry as it was on the queue.
        """

    def _deliver(self, message: Any, queue: str) -> None:
        if not is_celery_own(queue):
            try:
                self.admit(parse_envelope(message))
            except InvalidJobError as exc:
                self.refuse(message, str(exc))
                return
        try:
            super()._deliver(message, queue)  # type: ignore[no-untyped-call]
        except BROKER_ERRORS:
            raise
        except Exception as exc:
            # Passed the format check yet kombu or Celery raised on it: still this entry's fault.
            log.warning("delivery_failed", error=scrub(repr(exc))[:500])
            self.refuse(message, f"message could not be delivered: {type(exc).__name__}: {exc}")
