"""Wires job types to their handlers and builds executors; the one place that knows them all."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lorebase.crawl.job import CrawlSource
from lorebase.jobs.context import Handler
from lorebase.jobs.dispatch import kind_of
from lorebase.jobs.executor import EmbeddedExecutor
from lorebase.pipeline.index import EmbedChunks
from lorebase.pipeline.process import ProcessDocument
from lorebase.services import drafts, pipelines
from lorebase.services.documents import CRAWL_JOB, EMBED_JOB, PROCESS_JOB
from lorebase.services.notifications import EMAIL_JOB, WEBHOOK_JOB, SendEmail, SendWebhook

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

HANDLERS: dict[str, Handler] = {
    PROCESS_JOB: ProcessDocument(),
    EMBED_JOB: EmbedChunks(),
    CRAWL_JOB: CrawlSource(),
    WEBHOOK_JOB: SendWebhook(),
    EMAIL_JOB: SendEmail(),
}


class _Maintenance:
    """Periodic chores beside the reaper: settle stranded pipelines, purge expired drafts."""

    def __init__(self) -> None:
        self._last_purge = 0.0

    def __call__(self, runtime: Runtime) -> None:
        pipelines.sweep(runtime)
        if time.monotonic() - self._last_purge > 300:
            drafts.purge_expired(runtime)
            self._last_purge = time.monotonic()


def build_executor(
    runtime: Runtime, *, concurrency: int, name: str = "worker", kinds: tuple[str, ...] | None = None
) -> EmbeddedExecutor:
    """The embedded executor over every job type, or only those of the queue ``kinds`` given
    (``("crawl", "process")``: a worker that leaves embedding to others, as ``--queues`` does)."""
    handlers = HANDLERS if kinds is None else {t: h for t, h in HANDLERS.items() if kind_of(t) in kinds}
    if concurrency > 0:
        runtime.parse_pool.start()  # warm before the first document arrives
    return EmbeddedExecutor(
        runtime,
        handlers,
        concurrency=concurrency,
        lanes={CRAWL_JOB: runtime.settings.jobs.crawl_workers},
        name=name,
        on_settle=pipelines.settle,
        maintenance=_Maintenance(),
    )
