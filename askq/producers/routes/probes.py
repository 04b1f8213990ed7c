"""Probe and metrics routes: /healthz and /readyz (no token, for orchestrators) and /metrics."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from askq.core.health import Health, check_health
from askq.core.liveness import list_workers
from askq.producers.routes.common import AUTH, GUARDED, ClientDep

router = APIRouter()


class Readiness(BaseModel):
    ready: bool
    redis: bool
    workers_alive: int
    problems: list[str]


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(client: ClientDep) -> Any:
    """The health verdict over the sliding window; 503 only when critical."""
    health = check_health(client.redis, client.settings.health.window_s)
    return JSONResponse(status_code=503 if health.status == "critical" else 200, content=health.model_dump())


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(client: ClientDep) -> Any:
    """Ready when Redis answers and at least one worker is alive."""
    problems = []
    alive = 0
    try:
        client.redis.ping()
        alive = sum(1 for w in list_workers(client.redis, client.settings) if w.state == "alive")
        up = True
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        up = False
        problems.append(f"redis unreachable: {type(exc).__name__}")
    if up and alive == 0:
        problems.append("no worker alive")
    body = Readiness(ready=not problems, redis=up, workers_alive=alive, problems=problems)
    return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump())


@router.get("/metrics", dependencies=AUTH, response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}, **GUARDED})
def metrics(request: Request) -> Response:
    """Prometheus exposition, computed from Redis: the cluster's totals, whichever process serves it."""
    registry: CollectorRegistry = request.app.state.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
