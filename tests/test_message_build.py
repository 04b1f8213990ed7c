"""The producer's fast path builds the very message the plain path builds (askq/broker/envelope.py)."""

from __future__ import annotations

import base64
import json

from askq.broker import envelope as message
from askq.core.job import payload_text


def test_a_body_from_the_job_text_is_the_body_json_would_write() -> None:
    # Non-ASCII, a lone surrogate, quotes, nested metadata: json.dumps escapes them one way.
    job = {"question": "é \ud800 \"q\" \\ \n", "context": ["a", "b"], "id": "0f" * 16, "created": 1795626183.2057278,
           "metadata": {"k": [1, 2.5, None, True]}, "expires_at": None}
    for dispatch in (1, 7):
        plain = json.dumps([[], {"job": job, "dispatch": dispatch},
                            {"callbacks": None, "errbacks": None, "chain": None, "chord": None}], separators=(",", ":"))
        for built in (message.build("q", job, dispatch), message.build("q", job, dispatch, job_text=payload_text(job))):
            envelope = json.loads(built)
            assert base64.b64decode(envelope["body"]).decode() == plain
            tag = envelope["properties"]["delivery_tag"]
            assert len(tag) == 32 and int(tag, 16) >= 0
            assert envelope["headers"]["id"].startswith(f"{job['id']}.{dispatch}.")


def test_a_message_built_from_the_job_text_passes_the_contract() -> None:
    job = {"question": "Where is my order?", "context": [], "idempotency_key": None, "metadata": {},
           "expires_at": None, "ttl_s": None, "id": "ab" * 16, "created": 1795626183.25}
    delivery = message.parse_envelope(json.loads(message.build("askq", job, 1, job_text=payload_text(job))))
    assert getattr(delivery, "dispatch", None) == 1
