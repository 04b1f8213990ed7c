"""Dead-letter routes: list, show, replay (one or many) and purge."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Query
from pydantic import BaseModel

from askq.core.deadletter import DeadLetter, DeadReason
from askq.producers.routes.common import AUTH, GUARDED, NOT_FOUND, ClientDep

log = structlog.get_logger("askq.api")

router = APIRouter(dependencies=AUTH, responses=GUARDED)


class ReplayOutcome(BaseModel):
    id: str
    outcome: str  # ok, not_dead, changed, no_payload


class Purged(BaseModel):
    purged: int


@router.get("/v1/dead-letters", response_model=list[DeadLetter])
def list_dead_letters(
    client: ClientDep,
    reason: DeadReason | None = None,
    since: Annotated[float | None, Query(ge=0, description="only records from the last SINCE seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetter]:
    cutoff = client.dlq.server_time() - since if since is not None else None
    return client.dead_letters(reason=reason, since=cutoff, limit=limit)


@router.get("/v1/dead-letters/{record_id}", response_model=DeadLetter, responses=NOT_FOUND)
def show_dead_letter(record_id: str, client: ClientDep) -> DeadLetter:
    return client.dead_letter(record_id)


@router.post("/v1/dead-letters/{record_id}/replay", response_model=ReplayOutcome, responses=NOT_FOUND)
def replay_dead_letter(record_id: str, client: ClientDep) -> ReplayOutcome:
    outcome = client.replay(record_id)
    log.info("dead_letter_replayed", record_id=record_id, outcome=outcome)
    return ReplayOutcome(id=record_id, outcome=outcome)


@router.post("/v1/dead-letters/replay", response_model=list[ReplayOutcome])
def replay_dead_letters(client: ClientDep, reason: DeadReason | None = None) -> list[ReplayOutcome]:
    outcomes = client.replay_all(reason)
    log.info("dead_letters_replayed", reason=reason, count=len(outcomes))
    return [ReplayOutcome(id=i, outcome=o) for i, o in outcomes.items()]


@router.delete("/v1/dead-letters", response_model=Purged)
def purge_dead_letters(client: ClientDep, reason: DeadReason | None = None) -> Purged:
    purged = client.purge_dead_letters(reason)
    log.warning("dead_letters_purged", reason=reason, count=purged)
    return Purged(purged=purged)
