"""Celery protocol-2 messages for the answer task, built without a Celery app.

Producers, the reaper and dead-letter replay all put jobs on the queue through this one
function, so a message is JSON the same way everywhere and producers need no worker code.
The envelope is the one kombu's Redis transport stores in the queue list.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

TASK_NAME = "askq.answer"
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def task_id(job_id: str, dispatch: int) -> str:
    """Celery task id of one dispatch of a job: readable in Flower, unique per message."""
    return f"{job_id}.{dispatch}.{uuid.uuid4().hex[:8]}"


def build(queue: str, job: dict[str, Any], dispatch: int) -> str:
    """The JSON text to LPUSH onto the queue list for one dispatch of a job."""
    tid = task_id(str(job.get("id")), dispatch)
    body = json.dumps(
        [[], {"job": job, "dispatch": dispatch}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
        separators=(",", ":"),
    )
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": TASK_NAME,
            "id": tid,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": tid,
            "parent_id": None,
            # Flower shows these; the question itself stays out of broker metadata.
            "argsrepr": "()",
            "kwargsrepr": json.dumps({"job_id": job.get("id"), "dispatch": dispatch}),
            "origin": _ORIGIN,
            "ignore_result": True,
        },
        "properties": {
            "correlation_id": tid,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid.uuid4().hex,
        },
    }
    return json.dumps(envelope, separators=(",", ":"))


def locate(stored: str) -> tuple[str, int] | None:
    """Job id and dispatch of a message as kombu keeps it unacked (JSON [envelope, exchange, key])."""
    try:
        entry = json.loads(stored)
        return locate_envelope(entry[0])
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def locate_envelope(envelope: Any) -> tuple[str, int] | None:
    """Job id and dispatch of a message envelope (as on the queue list); None if not askq's.

    Read from the `kwargsrepr` header build() writes, so the body is never decoded here.
    """
    try:
        info = json.loads(envelope["headers"]["kwargsrepr"])
        job_id, dispatch = info["job_id"], info["dispatch"]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    if not isinstance(job_id, str) or not job_id or not isinstance(dispatch, int) or isinstance(dispatch, bool):
        return None
    return job_id, dispatch
