"""The job a message carries, checked against the job contract (askq/core/job.py).

The message itself (Celery's protocol-2 envelope, its headers, kombu's bookkeeping) is
askq.broker.envelope's; what is checked here is only what the answer task does with its
`job` argument: askq's own stored job (parse_job), or another service's submission
(parse_submission, submitted_spec). A worker checks a job once, in the task.
"""

from __future__ import annotations

import json
import re
from typing import Any

from askq.core.job import JobRequest, JobSpec, parse_request, parse_spec
from askq.errors import InvalidJobError


def parse_job(job: Any) -> JobSpec:
    """parse_spec, plus the refusal of text that is not valid Unicode (a lone surrogate, which no
    provider request, log line or stored record could encode)."""
    _check_encodes(job)
    return parse_spec(job)


def parse_submission(job: Any, message_id: str) -> JobRequest:
    """A submitted job (the native form) checked as a producer's request; the message id must be
    able to become its job id when it has no idempotency key."""
    _check_encodes(job)
    request = parse_request(job)
    if request.idempotency_key is None and not _JOB_ID.match(message_id):
        raise InvalidJobError(f"task id {_show(message_id)} cannot name a job (at most 64 letters, digits, "
                              "'_', '.', ':' or '-'): give the job an idempotency_key, or use such a task_id")
    return request


def submitted_spec(request: JobRequest, message_id: str) -> JobSpec:
    """The job a native submission creates. Its id is the idempotency key's (as for every other
    way in), else the Celery task id itself: a redelivery of the same message, or a producer
    retrying with the same task_id, names the same job, and `send_task(...).id` is the job id."""
    spec = JobSpec.of(request)
    if request.idempotency_key is None:
        spec = spec.model_copy(update={"id": message_id})
    return spec


# JobSpec's id rule (askq/core/job.py), for a task id that is to become a job id.
_JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")


def _check_encodes(job: Any) -> None:
    try:
        json.dumps(job, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJobError("job: contains a lone surrogate (text that is not valid Unicode)") from None


def _show(value: Any) -> str:
    """A value in an error message: short, and always encodable."""
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
