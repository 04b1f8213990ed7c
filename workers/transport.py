"""Kombu's Redis transport, made to dead-letter queue entries it cannot even read.

Kombu pops an entry off the queue list with BRPOP and parses it as its JSON envelope before
Celery sees anything. Raw garbage there (not JSON, not UTF-8, or JSON that is not an
envelope) raises inside the consumer's event loop: the entry is already popped, so it is
lost, and the consumer restarts its connection on every such entry. This channel records
the entry as an `invalid_payload` dead letter instead and carries on with the next one.
Envelopes that parse are left to Celery, whose refusals workers/consumer.py dead-letters.

Its QoS also survives a channel closed after a Redis restart released the connection: restore,
ack and reject there raise AttributeError in kombu, which would stop the worker process.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import structlog
from kombu.transport import redis as kombu_redis

from workers.consumer import dead_letter_raw

log = structlog.get_logger("askq.transport")


def is_envelope(message: Any) -> bool:
    """Whether a parsed queue entry has the shape kombu needs to build a Message from it."""
    if not isinstance(message, dict) or not isinstance(message.get("body"), str | bytes):
        return False
    properties = message.get("properties")
    if not (
        isinstance(properties, dict)
        and isinstance(properties.get("delivery_info"), dict)
        and "delivery_tag" in properties
        and isinstance(message.get("headers", {}), dict)
    ):
        return False
    if properties.get("body_encoding") == "base64":
        # Kombu decodes the body while building its Message, before anything could refuse it.
        try:
            base64.b64decode(message["body"], validate=True)
        except (ValueError, TypeError):
            return False
    return True


class QoS(kombu_redis.QoS):
    """Kombu's unacked bookkeeping, surviving a close after its connection was released."""

    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except AttributeError:
            # When Redis goes away, Celery closes the connection and then its default channel,
            # whose restore needs the connection's parameters: kombu raises AttributeError and
            # the worker process exits. The entries stay in `unacked`; the reaper restores
            # those whose job was never claimed (core/scripts.py RECOVER).
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
        return True


class Transport(kombu_redis.Transport):
    """Kombu's Redis transport with askq's Channel and an envelope check before delivery."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        if not is_envelope(message):
            dead_letter_raw(json.dumps(message, default=str)[:4000],
                            "queue entry is JSON but not a message envelope (or its body is not base64)")
            return
        super()._deliver(message, queue)  # type: ignore[no-untyped-call]
