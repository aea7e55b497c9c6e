"""create_app(): the FastAPI app. The lifespan builds the runtime once and, in the embedded
mode, starts the worker threads; shutdown drains them (jobs checkpoint and release leases).
With the Celery or RQ executor it starts a dispatcher instead (``jobs.dispatch``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lorebase import __version__, web
from lorebase.api import errors, idempotency
from lorebase.api.routes import drafts, health, kbs, pipelines, queries, search
from lorebase.runtime import Runtime
from lorebase.settings import Settings, get_settings

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
    )
    errors.install(app)
    idempotency.install(app)
    for module in (health, drafts, kbs, search, queries, pipelines):
        app.include_router(module.router)
    web.install(app)  # the dashboard: pages, /static, sign-in, security headers
    return app
