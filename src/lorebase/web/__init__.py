"""The web dashboard: server-rendered pages (Jinja2, autoescaped) and a little same-origin
JavaScript, served by the API's own app. ``install`` wires it into ``create_app``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Pages, sign-in and ``/static``. (The security headers of every response, the dashboard's
    CSP included, are ``web.security.SecurityHeaders``, added by ``create_app``.)"""
    from lorebase.web import session, views

    app.include_router(session.router)
    app.include_router(views.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(session.LoginRequired, session.login_redirect)
