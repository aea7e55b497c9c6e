"""A web source crawled by a Firecrawl API (``crawl.engine: firecrawl``), for sites that need
JavaScript. Same documents, same pipeline, same upsert rules as the built-in crawler; only the
fetching is Firecrawl's.

Resumable through the job's checkpoint: the Firecrawl crawl id is saved as soon as the crawl is
started (a re-run polls the same crawl rather than paying for a second one), and the ``next``
URL of the result page being read is saved with each page's documents in one transaction.
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorebase.db.models import Document, KnowledgeBase, Pipeline, Source, utcnow
from lorebase.errors import PermanentError
from lorebase.jobs.context import JobContext
from lorebase.pipeline import progress
from lorebase.pipeline.documents import SourceItem, add_items, record_failed_page, remove_documents
from lorebase.runtime import Runtime
from lorebase.tasks import crawl_source

from .counters import apply_page_counts
from .firecrawl import FirecrawlBatch, FirecrawlClient, FirecrawlPage
from .options import CrawlOptions
from .urls import normalize_url

#: how often a running Firecrawl crawl is polled
POLL_SECONDS = 1.0


def run_firecrawl(
    ctx: JobContext[Runtime], source_id: str, kb_id: str, start: str, options: CrawlOptions
) -> None:
    settings = ctx.runtime.settings.crawl
    if not settings.firecrawl_url:
        raise PermanentError("crawl.engine 'firecrawl' needs LOREBASE_CRAWL__FIRECRAWL_URL on the worker")
    with FirecrawlClient(
        settings.firecrawl_url, settings.firecrawl_api_key, timeout=settings.request_timeout_seconds
    ) as client:
        checkpoint = dict(ctx.job.checkpoint)
        if checkpoint.get("done"):
            return
        crawl_id = checkpoint.get("firecrawl_id")
        if not crawl_id:
            crawl_id = client.start_crawl(
                start,
                limit=options.max_pages,
                max_depth=options.max_depth,
                include=options.include,
                exclude=options.exclude,
            )
            with ctx.transaction() as s:
                ctx.save_checkpoint(s, {**checkpoint, "firecrawl_id": crawl_id, "next": None})
        batch = _wait_until_done(ctx, client, crawl_id)
        resume_at = ctx.job.checkpoint.get("next")
        if resume_at:
            batch = client.fetch(crawl_id, next_url=resume_at)
        while True:
            with ctx.transaction() as s:
                _save_pages(s, ctx, kb_id, source_id, batch.pages, crawl_source.PRIORITY)
                ctx.save_checkpoint(s, {**ctx.job.checkpoint, "next": batch.next, "done": not batch.next})
                if not batch.next:
                    source = s.get(Source, source_id)
                    if source is not None:
                        source.last_refreshed_at = utcnow()
                progress.refresh_progress(s, ctx.job.pipeline_id or "")
            ctx.runtime.queue.notify()
            if not batch.next:
                return
            ctx.check_control(resumable=True)
            batch = client.fetch(crawl_id, next_url=batch.next)


def _wait_until_done(ctx: JobContext[Runtime], client: FirecrawlClient, crawl_id: str) -> FirecrawlBatch:
    while True:
        ctx.check_control(resumable=True)
        batch = client.fetch(crawl_id)
        with ctx.transaction() as s:
            apply_page_counts(s, ctx, {"discovered": batch.total, "fetched": batch.completed, "skipped": 0})
            progress.refresh_progress(s, ctx.job.pipeline_id or "")
        if batch.status == "completed":
            return batch
        if batch.status == "cancelled":
            raise PermanentError(f"the Firecrawl crawl {crawl_id} was cancelled on the Firecrawl side")
        time.sleep(POLL_SECONDS)


def _save_pages(
    s: Session,
    ctx: JobContext[Runtime],
    kb_id: str,
    source_id: str,
    pages: list[FirecrawlPage],
    priority: int,
) -> None:
    kb = s.get(KnowledgeBase, kb_id)
    pipeline = s.get(Pipeline, ctx.job.pipeline_id) if ctx.job.pipeline_id else None
    if kb is None or pipeline is None:
        raise PermanentError("the knowledge base was deleted")
    items: list[SourceItem] = []
    seen: set[str] = set()
    for page in pages:
        url = normalize_url(page.url) or page.url
        if url in seen:
            continue
        seen.add(url)
        status = page.status_code or 200
        if status in (404, 410):
            gone = _document_for(s, kb.id, url)
            if gone is not None and gone.status != "failed":
                remove_documents(s, ctx.runtime, kb, [gone.id])
                continue
        if status >= 400 or page.error or not page.markdown.strip():
            reason = page.error or (f"HTTP {status}" if status >= 400 else "Firecrawl returned no content")
            record_failed_page(
                s,
                kb,
                pipeline,
                source_id=source_id,
                url=url,
                message=f"Firecrawl: {reason}",
                kind="permanent",
            )
            continue
        data = page.markdown.encode("utf-8")
        items.append(
            SourceItem(
                source_type="web",
                blob_key=ctx.runtime.blobs.put(data),
                media_type="text/markdown",
                content_hash=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                title=page.title,
                external_id=url,
                source_url=url,
                source_id=source_id,
                metadata={"url": url, "engine": "firecrawl"},
            )
        )
    if items:
        add_items(s, ctx.runtime, kb, pipeline, items, priority=priority)


def _document_for(s: Session, kb_id: str, url: str) -> Document | None:
    return s.execute(
        select(Document).where(Document.kb_id == kb_id, Document.external_id == url)
    ).scalar_one_or_none()
