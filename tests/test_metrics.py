"""/metrics: Prometheus exposition computed from Redis, moving as real workers run jobs."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from askq.config.settings import ApiSettings, Settings
from askq.producers.api import create_app
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers

TOKEN = "metrics-token"


def scrape(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = api.get("/metrics")
    assert reply.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_as_workers_run_jobs(stack: Stack, r: redis.Redis, settings: Settings, sim: Sim) -> None:
    api = TestClient(create_app(settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN])})),
                     headers={"Authorization": f"Bearer {TOKEN}"})
    client = Client(settings)
    before = scrape(api)
    assert value(before, "askq_jobs_submitted_total") == 0
    assert value(before, "askq_breaker_state", provider="primary") == 0

    # No worker yet: the jobs wait on the queue, which is what Flower cannot show.
    ids = client.submit_many([{"question": f"Where is parcel {i}?"} for i in range(6)])
    queued = scrape(api)
    assert value(queued, "askq_queue_depth") == 6
    assert value(queued, "askq_jobs_pending") == 6
    assert value(queued, "askq_jobs_submitted_total") == 6
    assert value(queued, "askq_oldest_pending_job_age_seconds") > 0  # nothing moves: it grows

    # The primary fails once for one question (retried), and every tier refuses another (dead letter).
    ids.append(client.submit("Where is my refund [[sim:bad_request]]"))
    stack.start_worker(concurrency=10)
    wait_workers(r, 1)
    for job_id in ids:
        client.wait(job_id, timeout=60)
    after = wait_for(lambda: (s := scrape(api)) and value(s, "askq_jobs_succeeded_total") == 6 and s,
                     30, what="six answered jobs in the metrics")
    assert value(after, "askq_jobs_submitted_total") == 7
    assert value(after, "askq_jobs_answered_total", tier="primary") == 6
    assert value(after, "askq_jobs_dead_total") == 1
    assert value(after, "askq_dead_letters_total", reason="permanent_error") == 1
    assert value(after, "askq_dead_letter_records") == 1
    assert value(after, "askq_attempts_total", provider="primary") >= 7
    primary_errors = [v for (name, labels), v in after.items()
                      if name == "askq_errors_total" and ("provider", "primary") in labels]
    assert sum(primary_errors) >= 1
    assert value(after, "askq_queue_depth") == 0
    assert value(after, "askq_jobs_pending") == 0
    assert value(after, "askq_job_end_to_end_seconds_count") == 6
    assert value(after, "askq_job_run_seconds_count") == 6
    assert value(after, "askq_job_queue_wait_seconds_count") == 6
    assert value(after, "askq_job_end_to_end_seconds_bucket", le="+Inf") == 6
    assert value(after, "askq_job_end_to_end_seconds_sum") > 0
    assert value(after, "askq_workers", state="alive") == 1
    beats = [k for k in after if k[0] == "askq_worker_heartbeat_age_seconds"]
    assert len(beats) == 1 and after[beats[0]] < 10
    assert value(after, "askq_oldest_running_job_age_seconds") == 0
    assert value(after, "askq_oldest_pending_job_age_seconds") == 0


def test_metrics_carry_no_secrets(settings: Settings, r: redis.Redis) -> None:
    secret = "sk-very-secret-provider-key"
    providers = [p.model_dump() | {"api_key": secret} for p in settings.providers]
    locked = settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN])})
    locked = Settings(**(locked.model_dump() | {"providers": providers, "redis_url": settings.redis_url,
                                                 "api": {"tokens": [TOKEN]}}))
    api = TestClient(create_app(locked), headers={"Authorization": f"Bearer {TOKEN}"})
    text = api.get("/metrics").text
    assert secret not in text
    assert TOKEN not in text


def test_build_info_names_the_version_served(settings: Settings) -> None:
    import celery

    from askq.core.version import VERSION

    api = TestClient(create_app(settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN])})),
                     headers={"Authorization": f"Bearer {TOKEN}"})
    (info,) = [(name, dict(labels)) for (name, labels), v in scrape(api).items()
               if name == "askq_build_info" and v == 1.0]
    assert info[1]["version"] == VERSION and info[1]["celery"] == celery.__version__
    assert set(info[1]) == {"version", "python", "celery", "kombu", "redis", "langchain_openai", "openai"}
