"""create_app(): the FastAPI app. The lifespan assembles the process once (``assembly.py``): the
runtime and, in the embedded mode, the worker threads; shutdown drains them (jobs checkpoint and
release leases). With the Celery or RQ executor it starts a dispatcher instead."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from lorebase import __version__, web
from lorebase.api import errors, guards, idempotency, openapi, pacing, ratelimit
from lorebase.api.routes import (
    drafts,
    evaluations,
    health,
    kbs,
    keys,
    pipelines,
    queries,
    search,
    workspace,
)
from lorebase.assembly import assemble
from lorebase.mcp import http as mcp_http
from lorebase.settings import Settings, get_settings
from lorebase.web.security import SecurityHeaders

log = logging.getLogger("lorebase")


def create_app(
    settings: Settings | None = None,
    *,
    workers: int | None = None,
    freeze_heap: bool = False,
    worker_process: bool = False,
) -> FastAPI:
    """The app; ``freeze_heap`` when it is the process's own (``lorebase serve``: ``Process.start``),
    ``worker_process`` to run its embedded workers in a child process (``assembly.WorkerChild``)."""
    settings = settings or get_settings()
    n_workers = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # embedded: worker threads (none with --workers 0); Celery/RQ: a dispatcher that sends
        # the jobs this process enqueues (like every process of the scaled mode)
        process = assemble(
            settings, role="serve", concurrency=n_workers, worker_process=worker_process
        ).start(freeze_heap=freeze_heap)
        app.state.process = process
        app.state.runtime = process.runtime
        try:
            async with mcp_endpoint.run():  # the MCP SDK's session manager lives as long as the app
                yield
        finally:
            process.stop()

    app = FastAPI(
        title="lorebase",
        version=__version__,
        description="Documents and websites into searchable knowledge bases, built by durable background jobs.",
        lifespan=lifespan,
        # 422, not a 500, for parameters no database can take (huge integers, NUL characters)
        dependencies=[Depends(guards.storable_parameters)],
    )
    errors.install(app)
    idempotency.install(app)
    for module in (health, drafts, kbs, search, queries, evaluations, pipelines, keys, workspace):
        app.include_router(module.router)
    web.install(app)  # the dashboard: pages, /static, sign-in
    mcp_endpoint = mcp_http.install(app, settings)  # POST /mcp: the MCP server, behind the same keys
    ratelimit.install(app, settings)  # per-key limits on search, uploads, finalize
    pacing.install(app)  # searches take turns while this server ingests
    openapi.install(app)  # a self-contained /openapi.json (no dangling #/$defs references)
    # the last middleware added runs first: the security headers go on every response, CORS
    # preflights included; CORS only when origins are configured (closed by default)
    if origins := cors_origins(settings):
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Retry-After", "Idempotent-Replayed"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(guards.BodyLimit, settings=settings)  # 413 before a body is buffered
    app.add_middleware(SecurityHeaders)
    return app


def cors_origins(settings: Settings) -> list[str]:
    """The origins of ``settings.cors_origins`` (comma-separated; empty: none, CORS stays off)."""
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]
