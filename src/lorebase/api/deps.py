"""Request dependencies as ``Annotated`` aliases: the runtime and the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from lorebase.runtime import Runtime
from lorebase.services.auth import Principal, authenticate

SESSION_COOKIE = "lorebase_session"


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else None
    if not key:
        key = request.cookies.get(SESSION_COOKIE)
    return await run_in_threadpool(authenticate, runtime.db, key)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
