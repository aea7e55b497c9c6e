"""``POST /mcp`` on ``lorebase serve``: the MCP server over Streamable HTTP, behind the API's
Bearer keys.

:class:`McpEndpoint` is a plain ASGI app routed at ``/mcp`` by ``create_app``. Before the SDK
sees a request it authenticates the key with ``services.auth.authenticate``, the REST API's own
check: a missing, invalid, revoked or expired key answers 401 in the API's error shape, with
``WWW-Authenticate: Bearer``. Only the ``Authorization`` header counts, not the dashboard's
session cookie (a cookie rides along with cross-site requests; MCP clients send headers). What a
key may then do is decided per tool, by its scopes, as the REST route of the same operation
decides it (``read`` for all but ``add_documents``, which needs ``write``); its workspace walls
every read.

The SDK runs stateless with JSON answers: every request stands alone (no session held in this
process), so any API process behind a load balancer can answer any request. Its session
manager must run inside the app's lifespan: ``create_app`` enters :meth:`McpEndpoint.run` there.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from mcp.server.mcpserver import Context
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from lorebase.api.errors import error_body
from lorebase.api.ratelimit import app_limiter
from lorebase.errors import Unauthorized
from lorebase.mcp.backend import Backend, LocalBackend
from lorebase.mcp.tools import build_server
from lorebase.services.auth import Principal, authenticate
from lorebase.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lorebase.runtime import Runtime

PATH = "/mcp"
#: the caller of the request being served; the SDK runs each message's handler in a copy of the
#: context of the request that carried it
_caller: ContextVar[Principal | None] = ContextVar("lorebase_mcp_caller", default=None)


class McpEndpoint:
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.server = build_server(self._backend)
        # makes the session manager; a body may be as large as a JSON body of the REST API
        self.server.streamable_http_app(
            stateless_http=True, json_response=True, max_request_body_size=settings.max_upload_bytes
        )
        self.manager = self.server.session_manager

    def run(self) -> AbstractAsyncContextManager[None]:
        """The SDK's session manager, for the app's lifespan (once per app)."""
        return self.manager.run()

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def _backend(self, ctx: Context) -> Backend:
        principal = _caller.get()
        if principal is None:  # cannot happen behind __call__; refuse rather than guess
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        return LocalBackend(
            self.runtime,
            principal,
            pacer=self.app.state.search_pacer,
            limiter=app_limiter(self.app, self.runtime.settings),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or ())
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
        try:
            principal = await run_in_threadpool(authenticate, self.runtime.db, key)
        except Unauthorized as exc:
            await _unauthorized(exc, send)
            return
        reset = _caller.set(principal)
        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            _caller.reset(reset)


async def _unauthorized(exc: Unauthorized, send: Send) -> None:
    body = json.dumps(error_body(401, exc.message, code=exc.code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: Settings) -> McpEndpoint:
    """Route ``/mcp`` to the endpoint (any method: the SDK answers GET and DELETE itself)."""
    endpoint = McpEndpoint(app, settings)
    app.router.add_route(PATH, endpoint, include_in_schema=False)  # type: ignore[arg-type]
    return endpoint
