"""Signing in to the dashboard: the API key becomes an HttpOnly, SameSite=Strict cookie.

``/login?token=<key>&next=<path>`` is the link ``lorebase serve`` prints (as Jupyter does);
``/login`` without a token shows a form. ``api/deps.get_principal`` accepts the cookie in place
of the Bearer header, so the pages' scripts call the same JSON API as every other client.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from lorebase.api.deps import SESSION_COOKIE, RuntimeDep
from lorebase.errors import Unauthorized
from lorebase.services.auth import Principal, authenticate
from lorebase.web.render import render
from lorebase.web.security import safe_next

router = APIRouter(include_in_schema=False)
COOKIE_MAX_AGE = 30 * 24 * 3600


class LoginRequired(Exception):
    """Raised by ``page_principal``; turned into a redirect to ``/login?next=<this page>``."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


async def login_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)


async def page_principal(request: Request, runtime: RuntimeDep) -> Principal:
    """The signed-in principal of a dashboard page; pages never take the Bearer header (a
    browser cannot send one on navigation), only the session cookie."""
    key = request.cookies.get(SESSION_COOKIE)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not key:
        raise LoginRequired(here)
    try:
        return await run_in_threadpool(authenticate, runtime.db, key)
    except Unauthorized:
        raise LoginRequired(here) from None


PagePrincipal = Annotated[Principal, Depends(page_principal)]


def _signed_in(request: Request, key: str, next_path: str) -> Response:
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        key,
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def _try_key(runtime: RuntimeDep, key: str) -> bool:
    try:
        await run_in_threadpool(authenticate, runtime.db, key)
    except Unauthorized:
        return False
    return True


@router.get("/login")
async def login_page(
    request: Request, runtime: RuntimeDep, token: str | None = None, next: str | None = None
) -> Response:
    target = safe_next(next)
    if token:
        if await _try_key(runtime, token.strip()):
            return _signed_in(request, token.strip(), target)
        return render(
            request, "login.html", {"next": target, "error": "That key is not valid.", "nav": "login"}, 401
        )
    return render(request, "login.html", {"next": target, "error": None, "nav": "login"})


@router.post("/login")
async def login_form(
    request: Request,
    runtime: RuntimeDep,
    key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    target = safe_next(next)
    if key.strip() and await _try_key(runtime, key.strip()):
        return _signed_in(request, key.strip(), target)
    return render(
        request, "login.html", {"next": target, "error": "That key is not valid.", "nav": "login"}, 401
    )


@router.api_route("/logout", methods=["GET", "POST"])
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
