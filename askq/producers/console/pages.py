"""The console's pages that only read: sign-in, dead letters, one record, workers, jobs, breakers, audit."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.job import job_id_for
from askq.core.liveness import list_workers
from askq.errors import JobNotFoundError
from askq.producers.console import audit, query
from askq.producers.console.session import COOKIE, check_token, same_origin, session_cookie, sign_out
from askq.producers.console.web import HEADERS, client_of, first, form_of, guard, render
from askq.producers.routes.common import is_loopback

router = APIRouter(prefix="/console", include_in_schema=False)

Field = Annotated[str, Query(max_length=10_000)]  # the filter itself says what is too long


@router.get("")
def home() -> Response:
    return RedirectResponse("/console/dead-letters", status_code=303, headers=HEADERS)


@router.get("/login")
def login_form(request: Request) -> Response:
    if not request.app.state.tokens:
        return RedirectResponse("/console/dead-letters", status_code=303, headers=HEADERS)
    return render(request, "login.html", operator=None, error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    if not same_origin(request):
        return render(request, "message.html", 403, title="Refused", operator=None,
                      message="this form was posted from another site")
    token = check_token(request, first(await form_of(request), "token").strip())
    if token is None:
        return render(request, "login.html", 401, operator=None, error="that token is not one of api.tokens")
    host = request.url.hostname or ""
    if request.url.scheme != "https" and not is_loopback(host):
        # The browser would drop the Secure cookie and show this form again without a word.
        return render(request, "login.html", 400, operator=None, error=(
            f"a browser keeps the console's Secure cookie only over HTTPS (or on localhost), and this page "
            f"came over plain HTTP from {host}: serve askq api behind HTTPS, or open it through an SSH "
            "tunnel to 127.0.0.1"))
    session_s = client_of(request).settings.api.console.session_s
    response = RedirectResponse("/console/dead-letters", status_code=303, headers=HEADERS)
    response.set_cookie(COOKIE, session_cookie(token, session_s), max_age=session_s, path="/",
                        secure=True, httponly=True, samesite="strict")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    sign_out(request)
    response = RedirectResponse("/console/login", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def _row(record: Any) -> dict[str, Any]:
    payload = record.payload or {}
    return {"record": record, "question": str(payload.get("question", ""))[:200],
            "metadata": payload.get("metadata") or {},
            "providers": sorted({str(h["provider"]) for h in record.history
                                 if isinstance(h, dict) and "provider" in h})}


@router.get("/dead-letters")
def dead_letters(request: Request, reason: Field = "", provider: Field = "", error: Field = "",
                 since: Field = "", until: Field = "", metadata: Field = "") -> Response:
    operator = guard(request)
    if isinstance(operator, Response):
        return operator
    fields = {"reason": reason, "provider": provider, "error": error, "since": since, "until": until,
              "metadata": metadata}
    wanted, problems = query.parse(fields)
    client = client_of(request)
    matched = [] if problems else [r for r in client.dlq.list(reason=wanted.reason, since=wanted.since,
                                                               limit=client.settings.dlq_max_records)
                                   if wanted.matches(r)]
    shown = matched[: client.settings.api.console.page_size]
    return render(request, "deadletters.html", operator=operator, fields=fields, problems=problems,
                  reasons=[r.value for r in DeadReason], total=len(matched), rows=[_row(r) for r in shown],
                  providers=[p.name for p in client.settings.providers])


@router.get("/dead-letters/{record_id}")
def dead_letter(request: Request, record_id: str) -> Response:
    operator = guard(request)
    if isinstance(operator, Response):
        return operator
    try:
        record = client_of(request).dlq.show(record_id)
    except JobNotFoundError:
        return render(request, "message.html", 404, operator=operator, title="No such dead letter",
                      message=f"no dead letter {record_id!r}: replayed, purged or trimmed")
    return render(request, "deadletter.html", operator=operator, row=_row(record),
                  payload=json.dumps(record.payload, indent=2, ensure_ascii=False) if record.payload else None,
                  history=[json.dumps(h, ensure_ascii=False) for h in record.history])


@router.get("/workers")
def workers(request: Request) -> Response:
    operator = guard(request)
    if isinstance(operator, Response):
        return operator
    client = client_of(request)
    found = list_workers(client.redis, client.settings)
    return render(request, "workers.html", operator=operator, live=[w for w in found if w.state != "dead"],
                  dead=[w for w in found if w.state == "dead"], retention_s=client.settings.worker_retention_s)


def _job(client: Any, q: str) -> tuple[str | None, dict[str, str]]:
    """The job named by an id, else by an idempotency key: its id and hash ({} when unknown)."""
    for job_id in (q, job_id_for(q)):
        fields = client.redis.hgetall(keys.job(job_id))
        if fields:
            return job_id, fields
    return None, {}


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


@router.get("/jobs")
def jobs(request: Request, q: Annotated[str, Query(max_length=256)] = "") -> Response:
    operator = guard(request)
    if isinstance(operator, Response):
        return operator
    client = client_of(request)
    job_id, fields = _job(client, q.strip()) if q.strip() else (None, {})
    view = client.store.get(job_id) if job_id else None
    record = None
    if job_id and fields.get("state") == "dead":
        with contextlib.suppress(JobNotFoundError):
            record = client.dlq.show(job_id)
    actions = [e for e in audit.recent(client.redis, client.settings.api.console.audit_records)
               if job_id and job_id in e.outcomes]
    return render(request, "jobs.html", operator=operator, q=q, job_id=job_id, view=view, fields=fields,
                  losses=_loads(fields.get("losses")), result=_loads(fields.get("result")),
                  history=[json.dumps(h, ensure_ascii=False) for h in (record.history if record else [])],
                  actions=actions)


@router.get("/breakers")
def breakers(request: Request) -> Response:
    operator = guard(request)
    if isinstance(operator, Response):
        return operator
    client = client_of(request)
    pipe = client.redis.pipeline(transaction=False)
    names = [p.name for p in client.settings.providers]
    for name in names:
        pipe.hgetall(keys.breaker(name))
    rows = [{"name": name, "state": f.get("state", "closed"), "opened_at": f.get("opened_at"),
             "probe_until": f.get("probe_until")} for name, f in zip(names, pipe.execute(), strict=True)]
    return render(request, "breakers.html", operator=operator, rows=rows,
                  cooldown_s=client.settings.breaker.cooldown_s)


@router.get("/audit")
def audit_trail(request: Request) -> Response:
    operator = guard(request)
    if isinstance(operator, Response):
        return operator
    client = client_of(request)
    return render(request, "audit.html", operator=operator, entries=audit.recent(client.redis, 200),
                  describe=audit.describe)

