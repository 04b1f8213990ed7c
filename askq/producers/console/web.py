"""What every console page shares: templates, the operator check, forms and security headers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from askq.producers.client import Client
from askq.producers.console.session import Operator, operator_of
from askq.producers.routes.jobs import read_body

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")  # .html templates autoescape every value


def _utc(value: Any) -> str:
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


TEMPLATES.env.filters["utc"] = _utc

# No script runs on a console page (forms do everything), nothing is framed (clickjacking), forms
# post only back here, and no page is cached or sends a Referer with ids in it to another site.
HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make Chrome post `Origin: null`
    "Cache-Control": "no-store",
}


def client_of(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status)
    response.headers.update(HEADERS)
    return response


def guard(request: Request) -> Operator | Response:
    """The operator, or the response that replaces the page: the login form, or a refusal."""
    found = operator_of(request)
    if isinstance(found, Operator):
        return found
    if found.status == 401 and request.method == "GET" and not request.headers.get("authorization"):
        return RedirectResponse("/console/login", status_code=303, headers=HEADERS)
    title = "Not signed in" if found.status == 401 else "Refused"
    return render(request, "message.html", found.status, title=title, message=found.message, operator=None)


MAX_FORM_FIELDS = 5000  # far above any page (api.console.page_size ids), far below a costly parse


async def form_of(request: Request) -> dict[str, list[str]]:
    """A posted form (application/x-www-form-urlencoded), bounded like every API body."""
    settings = client_of(request).settings.api
    raw = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    try:
        return parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # parse_qs past max_num_fields; anything else it accepts
        raise HTTPException(413, f"a console form has at most {MAX_FORM_FIELDS} fields") from None


def first(form: dict[str, list[str]], name: str) -> str:
    return form.get(name, [""])[0]
