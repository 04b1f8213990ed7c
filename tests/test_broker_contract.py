"""askq's broker package against the kombu and Celery installed: the wire format, as their own
parsers read it, and every private method askq overrides or calls (askq/broker/private.py).

These fail on an upgrade that changes what askq relies on, naming what changed, so the pins in
pyproject.toml are raised only with this file green.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from celery import Celery
from celery.worker.request import Request
from kombu import Connection
from kombu.transport.virtual.base import Message

from askq.broker import envelope, private
from askq.broker.transport import QoS
from askq.core.job import JobSpec
from askq.core.message import parse_job
from askq.core.redisserver import EmbeddedRedis
from askq.workers.refusals import Transport


def _spec() -> JobSpec:
    return JobSpec.new("Ünïcödé ✓ Where is my order?", context=["Order 42 shipped."], idempotency_key="k-1",
                       metadata={"team": "shop", "n": 4711, "vip": True, "note": None})


def _kombu_message(text: str) -> Message:
    """The Message kombu's virtual transport builds from an entry it popped (as Transport._deliver does)."""
    channel = Connection("memory://").channel()
    return Message(json.loads(text), channel=channel)


def test_kombu_decodes_askqs_envelope_as_askq_built_it() -> None:
    spec = _spec()
    text = envelope.build("askq", spec.model_dump(mode="json"), dispatch=3)
    msg = _kombu_message(text)
    args, kwargs, embed = msg.decode()  # kombu's own deserialisation, JSON accepted only
    assert args == [] and kwargs["dispatch"] == 3 and parse_job(kwargs["job"]) == spec
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert msg.content_type == "application/json" and msg.content_encoding == "utf-8"
    assert msg.delivery_info == {"exchange": "", "routing_key": "askq"}
    assert msg.headers["task"] == envelope.TASK_NAME and msg.headers["id"].startswith(spec.id + ".3.")
    assert msg.delivery_tag == json.loads(text)["properties"]["delivery_tag"]
    # raw_text and named_job read kombu's `_raw` (the entry as it was parsed).
    assert envelope.named_job(msg) == (spec.id, spec.model_dump(mode="json"))
    assert json.loads(envelope.raw_text(msg, 100_000)) == json.loads(text)


def test_celery_reads_askqs_envelope_as_a_protocol_2_request() -> None:
    from askq.workers.tasks import answer

    spec = _spec()
    msg = _kombu_message(envelope.build("askq", spec.model_dump(mode="json"), dispatch=2))
    # Celery's strategy takes the protocol-1 path (hybrid_to_proto2) when the decoded body has
    # `args`: askq's list body never does, so its headers are read as they are.
    assert "args" not in msg.payload and "task" in msg.headers
    request = Request(msg, app=answer.app, task=answer, hostname="contract@test")
    assert request.task_name == envelope.TASK_NAME and request.id == msg.headers["id"]
    assert request.args == [] and request.kwargs == {"job": spec.model_dump(mode="json"), "dispatch": 2}
    assert request.eta is None and request.expires is None and list(request.time_limits) == [None, None]
    assert request.ignore_result is True and request.delivery_info["routing_key"] == "askq"
    assert json.loads(request.kwargsrepr) == {"job_id": spec.id, "dispatch": 2}
    # The job passes the contract as kombu would restore it, too.
    assert envelope.parse_envelope(json.loads(json.dumps(msg._raw))) == envelope.Envelope(
        request.id, spec.model_dump(mode="json"), 2)


def test_askqs_headers_are_celerys_own_protocol_2_headers() -> None:
    """A header Celery adds or renames in a release shows here, before a worker refuses its messages."""
    app = Celery("contract", broker="memory://")
    sent = app.amqp.as_task_v2("t-1", envelope.TASK_NAME, (), {"job": {"question": "Hi?"}})
    built = json.loads(envelope.build("askq", _spec().model_dump(mode="json"), dispatch=1))
    # ignore_result is what askq sets on every message (Celery writes it when the producer asks).
    assert set(built["headers"]) - {"ignore_result"} <= set(sent.headers)
    # Every header Celery's send_task writes is one askq's check knows (a native submission),
    # plus `redelivered`, which kombu adds on restore.
    assert set(sent.headers) | {"redelivered", "ignore_result"} == set(envelope._HEADERS)


@pytest.mark.parametrize("relied", private.RELIED_ON, ids=lambda p: p.qualname)
def test_private_method_askq_relies_on_keeps_its_signature(relied: private.Private) -> None:
    installed = relied.installed()
    assert installed == relied.signature, (
        f"{relied.qualname} changed signature: recorded {relied.signature}, installed {installed}; "
        f"review {relied.used_by} before raising the kombu/celery pins")


def test_a_changed_signature_is_named() -> None:
    changed = private.Private("kombu.transport.redis:QoS", "ack", "(self)", "example")
    gone = private.Private("kombu.transport.redis:QoS", "no_such_method", "(self)", "example")
    assert private.drift((changed, gone)) == [
        "kombu.transport.redis:QoS.ack (example): recorded (self), installed (self, delivery_tag)",
        "kombu.transport.redis:QoS.no_such_method (example): gone: AttributeError: "
        "type object 'QoS' has no attribute 'no_such_method'"]
    assert private.drift() == []


def test_every_override_in_the_broker_package_is_recorded() -> None:
    """A new override of a kombu/Celery method must be added to private.RELIED_ON (and so checked)."""
    from askq.broker import consumer, transport

    recorded = {(p.owner.split(":")[1], p.name) for p in private.RELIED_ON if p.name}
    ours = {"released", "refuse", "admit"}
    for cls in (transport.QoS, transport.Channel, transport.Transport, consumer.Consumer):
        base = cls.__mro__[1]
        for name, value in vars(cls).items():
            overrides = hasattr(base, name) and not name.startswith("__") and name not in ours
            if overrides and callable(value) and not isinstance(value, type):
                assert (base.__name__, name) in recorded, f"{cls.__qualname__}.{name} overrides {base} unrecorded"


def test_qos_of_a_released_connection_skips_and_logs_instead_of_stopping_the_worker(
    redis_server: EmbeddedRedis
) -> None:
    conn = Connection(redis_server.url, transport=Transport)
    channel: Any = conn.default_channel
    qos: QoS = channel.qos
    assert not qos.released()
    qos.ack("live-tag")  # a live channel acks through kombu (an unknown tag is a no-op there)
    channel.close()
    conn._close()  # what Celery does when Redis goes away: the transport's client is released
    assert qos.released()
    with structlog.testing.capture_logs() as logs:
        qos.ack("tag-1")
        qos.reject("tag-2", requeue=True)
        qos.restore_unacked()
    assert [e["event"] for e in logs] == ["ack_on_closed_channel", "reject_on_closed_channel",
                                         "unacked_restore_skipped"]


def test_an_attribute_error_in_kombu_is_no_longer_swallowed(redis_server: EmbeddedRedis) -> None:
    """Only the released connection is recognised; any other AttributeError propagates."""
    conn = Connection(redis_server.url, transport=Transport)
    channel: Any = conn.default_channel
    qos: QoS = channel.qos
    assert channel.client is not None  # a pool exists: the channel is not released
    qos.channel = None  # a broken QoS (kombu's own state gone wrong), not a released connection
    with pytest.raises(AttributeError):
        qos.ack("tag-1")
    qos.channel = channel
    conn.release()
