"""durability: strict — a submit returns only once the job is on disk and on the replicas asked for."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from askq.config.settings import Settings, load_settings
from askq.core import keys
from askq.core.redisserver import EmbeddedRedis, free_port, redis_server_binary
from askq.errors import DurabilityError, EmbeddedRedisError
from askq.producers.client import Client
from tests.conftest import wait_for


def _server(path: Path, appendonly: bool = True) -> EmbeddedRedis:
    """A fresh server; another free port when the one picked was taken meanwhile (other test runs)."""
    for _ in range(2):
        try:
            return EmbeddedRedis(path, appendonly=appendonly).start()
        except EmbeddedRedisError:
            continue
    return EmbeddedRedis(path, appendonly=appendonly).start()


class Replica:
    """A second server replicating the primary, with its own AOF (WAITAOF counts replicas' fsyncs)."""

    def __init__(self, var_dir: Path, primary_port: int) -> None:
        self.port = free_port()
        data = var_dir / "replica"
        data.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data),
             "--appendonly", "yes", "--save", "", "--replicaof", "127.0.0.1", str(primary_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def linked(self) -> bool:
        try:
            return self.client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, Replica]]:
    primary = _server(tmp_path / "primary")
    replica = Replica(tmp_path, primary.port)
    try:
        wait_for(replica.linked, 30, what="the replica linked to its primary")
        yield primary, replica
    finally:
        replica.stop()
        primary.kill()


def _strict(url: str, tmp_path: Path, replicas: int, timeout_s: float = 1.0) -> Settings:
    return load_settings(redis_url=url, var_dir=tmp_path, durability="strict", durability_replicas=replicas,
                         durability_timeout_s=timeout_s)


def test_every_job_accepted_before_kill9_of_the_primary_is_on_the_promoted_replica(
    pair: tuple[EmbeddedRedis, Replica], tmp_path: Path
) -> None:
    primary, replica = pair
    client = Client(_strict(primary.url, tmp_path, replicas=1))
    accepted: list[str] = []
    stopped = threading.Event()

    def submit() -> None:
        i = 0
        while not stopped.is_set():
            try:
                accepted.append(client.submit(f"Where is parcel {i}?", idempotency_key=f"parcel-{i}"))
            except (DurabilityError, redis.RedisError):
                return  # the primary is gone: nothing after this was accepted
            i += 1

    producer = threading.Thread(target=submit)
    producer.start()
    wait_for(lambda: len(accepted) >= 200, 60, what="200 strict submits")
    # The replica falls behind (frozen), so the primary holds writes it has not got yet; then
    # the primary dies (kill -9) with submits in flight, and the replica takes over.
    replica.proc.send_signal(signal.SIGSTOP)
    time.sleep(0.3)
    primary.kill()
    replica.proc.send_signal(signal.SIGCONT)
    stopped.set()
    producer.join(30)
    replica.client.execute_command("REPLICAOF", "NO", "ONE")
    pipe = replica.client.pipeline(transaction=False)
    for job_id in accepted:
        pipe.exists(keys.job(job_id))
    missing = [j for j, found in zip(accepted, pipe.execute(), strict=True) if not found]
    assert not missing, f"{len(missing)} of {len(accepted)} accepted jobs are not on the new primary"
    assert replica.client.llen("askq") >= len(accepted)  # and each one's message is queued


def test_a_submit_the_replicas_cannot_confirm_is_a_clear_retryable_error(tmp_path: Path) -> None:
    with _server(tmp_path / "alone") as server:
        client = Client(_strict(server.url, tmp_path, replicas=1, timeout_s=0.2))
        started = time.monotonic()
        with pytest.raises(DurabilityError) as caught:
            client.submit("Where is my parcel?", idempotency_key="ticket-1")
        assert time.monotonic() - started < 10
        text = str(caught.value)
        assert "may be in" in text and "same idempotency key" in text and "0 of 1" in text
        (job_id,) = caught.value.job_ids
        # The job is in: the retry with the same key names the same job, and does not enqueue it twice.
        r = redis.Redis.from_url(server.url, decode_responses=True)
        assert r.exists(keys.job(job_id))
        relaxed = Client(load_settings(redis_url=server.url, var_dir=tmp_path))
        assert relaxed.submit("Where is my parcel?", idempotency_key="ticket-1") == job_id
        assert r.llen("askq") == 1
        r.close()


def test_strict_without_replicas_waits_for_the_local_fsync(tmp_path: Path) -> None:
    with _server(tmp_path / "alone") as server:
        client = Client(_strict(server.url, tmp_path, replicas=0))
        ids = client.submit_many([{"question": f"q{i}"} for i in range(50)])
        assert len(set(ids)) == 50


def test_strict_on_a_server_without_an_aof_says_it_cannot_confirm(tmp_path: Path) -> None:
    with _server(tmp_path / "noaof", appendonly=False) as server:
        client = Client(_strict(server.url, tmp_path, replicas=0))
        with pytest.raises(DurabilityError, match=r"cannot confirm.*may be in"):
            client.submit("Where is my parcel?")


def test_the_api_answers_503_saying_the_job_may_be_in(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from askq.config.settings import ApiSettings
    from askq.producers.api import create_app

    with _server(tmp_path / "alone") as server:
        settings = _strict(server.url, tmp_path, replicas=1, timeout_s=0.2).model_copy(
            update={"api": ApiSettings(tokens=["t-1"])})
        with TestClient(create_app(settings), headers={"Authorization": "Bearer t-1"}) as api:
            reply = api.post("/v1/jobs", json={"question": "Where is my parcel?", "idempotency_key": "ticket-9"})
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        assert "may be in" in reply.json()["detail"]
