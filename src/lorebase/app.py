"""create_app(): the FastAPI app. The lifespan builds the runtime once and, in the embedded
mode, starts the worker threads; shutdown drains them (jobs checkpoint and release leases).
With the Celery or RQ executor it starts a dispatcher instead (``jobs.dispatch``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from lorebase import __version__, web
from lorebase.api import errors, guards, idempotency, openapi, ratelimit
from lorebase.api.routes import drafts, health, kbs, keys, pipelines, queries, search
from lorebase.runtime import Runtime
from lorebase.settings import Settings, get_settings
from lorebase.web.security import SecurityHeaders

log = logging.getLogger("lorebase")


def create_app(settings: Settings | None = None, *, workers: int | None = None) -> FastAPI:
    settings = settings or get_settings()
    n_workers = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        if n_workers > 0 and settings.executor == "embedded":
            from lorebase.pipeline.runner import build_executor

            executor = build_executor(runtime, concurrency=n_workers, name="serve")
            executor.start()
            runtime.executor = executor
        elif settings.executor != "embedded":
            # Celery/RQ workers run the jobs; this process sends the messages for the jobs it
            # enqueues (and for any that are due, like every process of the scaled mode)
            from lorebase.jobs.dispatch import Dispatcher, make_sender

            runtime.dispatcher = Dispatcher(runtime, make_sender(settings))
            runtime.dispatcher.start()
        try:
            yield
        finally:
            if runtime.dispatcher is not None:
                runtime.dispatcher.stop()
            if runtime.executor is not None:
                runtime.executor.stop(drain=True, timeout=30)
            runtime.close()

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
    for module in (health, drafts, kbs, search, queries, pipelines, keys):
        app.include_router(module.router)
    web.install(app)  # the dashboard: pages, /static, sign-in
    ratelimit.install(app, settings)  # per-key limits on search, uploads, finalize
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
