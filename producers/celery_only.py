"""Enqueue an askq job from a service that has only `celery` installed (no askq code).

    python producers/celery_only.py redis://127.0.0.1:6379/0 "Where is my order?"

Prints the job id. The worker turns the message into a job (idempotently) and answers it; read the
answer with `askq status JOB_ID`, the HTTP API or the Python client.
"""

import sys
import uuid

from celery import Celery

# askq's fixed namespace for idempotency keys: the job id of a key is uuid5(JOB_NAMESPACE, key).hex
JOB_NAMESPACE = uuid.UUID("5f1c7a2e-3b0d-4a57-9a8e-0c5d1e7b2a41")


def main() -> None:
    broker, question = sys.argv[1], sys.argv[2]
    key = sys.argv[3] if len(sys.argv) > 3 else None
    app = Celery("shop", broker=broker)  # askq's Redis
    job = {"question": question, "metadata": {"team": "shop"}}
    if key:
        job["idempotency_key"] = key  # the same key is the same job, however often it is sent
    result = app.send_task("askq.answer", queue="askq", kwargs={"job": job})
    print(uuid.uuid5(JOB_NAMESPACE, key).hex if key else result.id)


if __name__ == "__main__":
    main()
