"""The askq console: operators' web pages served by `askq api` under /console.

Dead letters (filter, dry run, replay, purge, replay with edits, audit), workers, jobs and
breakers, rendered on the server from Jinja2 templates with plain HTML forms: no script, no
build step, nothing loaded from another host. Same access rule as the API (see session.py).
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from askq.producers.console import actions, pages
from askq.producers.console.session import docs_access
from askq.producers.console.web import HERE

__all__ = ["docs_access", "install"]


def install(app: FastAPI) -> None:
    """Add the console's routes and its stylesheet to the API app."""
    # Keys the CSRF value when no tokens are configured (loopback only); new per process.
    app.state.console_secret = secrets.token_bytes(32)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
