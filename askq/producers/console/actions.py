"""The console's dead-letter actions: a dry run that counts, then replay, purge or replay-with-edits.

An action applies to exactly the records the operator saw: the page posts each record's id with
the death it showed (`id|dead_at`), and a record that is another death now, or gone, is reported
and left alone (DeadLetterQueue.replay_seen / purge_seen). Replays are capped per minute for all
console users together (api.console.replays_per_minute); every action is audited.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from askq.core.deadletter import DeadLetter
from askq.errors import InvalidJobError, JobNotFoundError
from askq.producers.client import Client
from askq.producers.console import audit
from askq.producers.console.session import Operator, csrf_ok, same_origin
from askq.producers.console.web import client_of, first, form_of, guard, render

router = APIRouter(prefix="/console", include_in_schema=False)

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ACTIONS = {"replay": "Replay", "purge": "Purge", "edit": "Replay with edits"}


@dataclass
class Item:
    """One record an action names, and what the dry run or the action found."""

    id: str
    dead_at: float
    record: DeadLetter | None = None
    status: str = "as shown"  # as shown | changed | gone | invalid
    question: str | None = None  # after the edit
    payload: dict[str, Any] | None = None  # after the edit
    problem: str = ""
    outcome: str = ""

    @property
    def token(self) -> str:
        return f"{self.id}|{self.dead_at!r}"


@dataclass
class Edit:
    """A question fix: a whole new question (one record), or a find/replace (any number)."""

    question: str = ""
    find: str = ""
    replace: str = ""

    def apply(self, question: str) -> str:
        if self.question:
            return self.question
        return question.replace(self.find, self.replace) if self.find else question

    def describe(self) -> str:
        return f"question := {self.question!r}" if self.question else f"question: {self.find!r} -> {self.replace!r}"


def _items(form: dict[str, list[str]], limit: int) -> tuple[list[Item], str]:
    items: list[Item] = []
    seen: set[str] = set()
    for value in form.get("item", []):
        record_id, _, dead_at = value.rpartition("|")
        try:
            item = Item(record_id, float(dead_at))
        except ValueError:
            return [], f"not an id|dead_at pair: {value[:80]!r}"
        if not _ID.fullmatch(record_id):
            # Record ids are job ids or uuid hex; anything else names no record (and would bloat the audit).
            return [], f"not a dead-letter id: {record_id[:80]!r}"
        if record_id not in seen:
            seen.add(record_id)
            items.append(item)
    if not items:
        return [], "no dead letters were named: filter the list, then act on what it shows"
    if len(items) > limit:
        return [], f"{len(items)} dead letters named, at most {limit} (api.console.page_size) per action"
    return items, ""


def _check(client: Client, items: list[Item], action: str, edit: Edit) -> None:
    """The dry run: is each record still the death that was shown, and is its edit valid?"""
    for item in items:
        try:
            item.record = client.dlq.show(item.id)
        except JobNotFoundError:
            item.status = "gone"
            continue
        if item.record.dead_at != item.dead_at:
            item.status = "changed"
        elif action == "edit":
            try:
                question = str((item.record.payload or {}).get("question", ""))
                item.payload = client.dlq.edited(item.record, edit.apply(question))
                item.question = str(item.payload["question"])
            except InvalidJobError as exc:
                item.status, item.problem = "invalid", str(exc)


def _act(client: Client, operator: Operator, items: list[Item], action: str, edit: Edit) -> None:
    ready = [i for i in items if i.status == "as shown"]
    for item in items:
        item.outcome = item.status if item.status != "as shown" else ""
    if action == "purge":
        for item in ready:
            item.outcome = client.dlq.purge_seen(item.id, item.dead_at)
    else:
        allowed = audit.take_replays(client.redis, len(ready), client.settings.api.console.replays_per_minute)
        asked_at = client.dlq.server_time()  # before each record is checked again (see replay_seen)
        for n, item in enumerate(ready):
            if n >= allowed:
                item.outcome = "rate_capped"
                continue
            item.outcome = client.dlq.replay_seen(item.id, item.dead_at, asked_at,
                                                  item.payload if action == "edit" else None)
    audit.record(client.redis, client.settings.api.console.audit_records, audit.AuditEntry(
        at=time.time(), who=operator.name, action=action, outcomes={i.id: i.outcome for i in items},
        question=edit.describe() if action == "edit" else None))


async def _handle(request: Request, confirmed: bool) -> Response:
    operator = await run_in_threadpool(guard, request)  # reads Redis (a signed-out session)
    if isinstance(operator, Response):
        return operator
    form = await form_of(request)
    if not same_origin(request) or not csrf_ok(operator, first(form, "csrf")):
        return render(request, "message.html", 403, operator=operator, title="Refused",
                      message="this form did not come from this console (CSRF check failed): reload the page")
    client = client_of(request)
    action = first(form, "action")
    items, problem = _items(form, client.settings.api.console.page_size)
    edit = Edit(first(form, "question"), first(form, "find"), first(form, "replace"))
    if action not in ACTIONS:
        problem = f"unknown action {action[:40]!r}"
    elif action == "edit" and edit.question and len(items) > 1:
        problem = "a whole new question fits one dead letter; for many, use find and replace"
    if problem:
        return render(request, "message.html", 422, operator=operator, title="Nothing done", message=problem)
    await run_in_threadpool(_check, client, items, action, edit)
    if confirmed:
        await run_in_threadpool(_act, client, operator, items, action, edit)
    counts: dict[str, int] = {}
    for item in items:
        key = item.outcome if confirmed else item.status
        counts[key] = counts.get(key, 0) + 1
    return render(request, "action.html", operator=operator, action=action, label=ACTIONS[action], items=items,
                  edit=edit, confirmed=confirmed, counts=counts,
                  ready=sum(1 for i in items if i.status == "as shown"))


@router.post("/dead-letters/preview")
async def preview(request: Request) -> Response:
    """The dry run: how many of the named records an action would touch, and each edit's result."""
    return await _handle(request, confirmed=False)


@router.post("/dead-letters/act")
async def act(request: Request) -> Response:
    return await _handle(request, confirmed=True)
