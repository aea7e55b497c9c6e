"""Request dependencies as ``Annotated`` aliases: the runtime and the calling principal."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Protocol

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from lorebase.errors import InvalidInput
from lorebase.runtime import Runtime
from lorebase.services.auth import Principal, authenticate, required_scope

SESSION_COOKIE = "lorebase_session"
#: the header the dashboard's scripts send with every unsafe request (a cross-site form cannot)
CSRF_HEADER = "x-requested-with"
CSRF_VALUE = "lorebase"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


async def get_runtime(request: Request) -> Runtime:
    """``async`` (no I/O): a sync dependency is a hop to the thread pool and back, and under load
    each hop waits for the GIL (finalize under ingestion, ``benchmarks/README.md``)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def same_origin(request: Request) -> bool:
    """True when the browser says the request comes from a page of this very server."""
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    return bool(origin and host) and origin == f"{request.url.scheme}://{host}"


def check_csrf(request: Request) -> None:
    """A cookie rides along with cross-site requests too: unsafe methods authenticated by the
    session cookie must prove they come from our own pages, by the custom header (which a
    cross-site form cannot set, and which a cross-site fetch cannot send without a CORS
    preflight that we never grant) or a matching ``Origin``. Bearer requests carry their key
    explicitly and are not affected."""
    if request.method in SAFE_METHODS:
        return
    if request.headers.get(CSRF_HEADER, "").lower() == CSRF_VALUE or same_origin(request):
        return
    raise HTTPException(
        403,
        f"a request authenticated by the session cookie needs the header "
        f"'X-Requested-With: {CSRF_VALUE}' or a same-origin Origin",
    )


async def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller, authenticated by the Bearer key (or the dashboard's session cookie), whose
    key's scopes allow this request (``services.auth.required_scope``): 401 without a valid
    key, 403 when the key may not do this."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else None
    if not key:
        key = request.cookies.get(SESSION_COOKIE)
        if key:
            check_csrf(request)
    principal = await run_in_threadpool(authenticate, runtime.db, key)
    route_path = getattr(request.scope.get("route"), "path", request.url.path)
    needed = required_scope(request.method, route_path)
    principal.require(needed, f"{request.method} {route_path}")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

#: ``?not_before=`` of finalize, ``documents``, ``sources`` and ``refresh``: the pipeline is
#: created at once and its jobs wait until then (``services.pipelines.scheduled_start``: a time
#: without a zone is a 422, one already past starts now)
NotBefore = Annotated[
    datetime | None,
    Query(
        description="Start the pipeline's work no earlier than this (ISO 8601 with a timezone, "
        "e.g. 2026-12-08T02:00:00Z); a past time starts now."
    ),
]


class _Scheduled(Protocol):
    not_before: datetime | None


def not_before_of(query: datetime | None, body: _Scheduled | None) -> datetime | None:
    """``not_before`` from the query string or the JSON body (either; both only when equal)."""
    given = body.not_before if body is not None else None
    if query is not None and given is not None and query != given:
        raise InvalidInput("not_before is given twice (query and body) with different values")
    return given if given is not None else query
