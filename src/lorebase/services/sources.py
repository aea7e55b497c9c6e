"""Web sources: adding one to a draft or a KB, and refreshing a KB's web sources.

A web source becomes a ``sources`` row and one ``crawl_source`` job per pipeline. The URL and
options are validated when the source is added, so that a typo or a refused address (the SSRF
guard's pre-check) is a 422 at once rather than a failed crawl later.

Scheduled refreshes: a web source may carry ``refresh_every`` (``"90s"``, ``"30m"``, ``"24h"``,
``"7d"``: :func:`parse_every`), at least ``scheduler.refresh_seconds`` (the period of the
``refresh_sources`` task that starts them; 60 s by default). It is stored as
``sources.refresh_seconds`` with ``next_refresh_at`` = its creation (or its last refresh) + every.
The periodic task (:class:`RefreshDueSources`) refreshes each due source in a pipeline of its own,
moving ``next_refresh_at`` forward in the same transaction with a compare-and-set, so two
workers never start the same refresh; a source whose previous crawl pipeline has not ended is
skipped this time (and moved on by one period).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lorebase.crawl.guard import AddressPolicy, BlockedAddress, precheck_url
from lorebase.crawl.options import parse_options
from lorebase.crawl.urls import fetch_form, normalize_url
from lorebase.db.models import Job, KnowledgeBase, Pipeline, Source, new_id, utcnow
from lorebase.db.states import PIPELINE_FINAL
from lorebase.errors import InvalidInput
from lorebase.pipeline.documents import new_pipeline
from lorebase.services.auth import Principal
from lorebase.services.kbs import load as load_kb
from lorebase.services.pipelines import scheduled_start
from lorebase.tasks import crawl_source

if TYPE_CHECKING:
    from lorebase.jobs.context import JobContext
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.sources")

EVERY = re.compile(r"^(\d{1,6})(s|m|h|d)$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: the longest ``refresh_every``: a year
MAX_EVERY_SECONDS = 365 * 86400
#: due sources one run of the periodic task refreshes (the rest: the next run)
REFRESH_BATCH = 100


def parse_every(text: str | None, *, minimum: float) -> int | None:
    """``refresh_every`` in seconds (``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``), or None; strict:
    digits and one unit, nothing else, from ``minimum`` seconds to a year."""
    if text is None:
        return None
    found = EVERY.match(text) if isinstance(text, str) else None
    if found is None:
        raise InvalidInput(f"refresh_every must be digits and a unit s, m, h or d, e.g. '24h' (got {text!r})")
    seconds = int(found[1]) * UNIT_SECONDS[found[2]]
    if seconds < minimum or seconds > MAX_EVERY_SECONDS:
        raise InvalidInput(
            f"refresh_every must be from {minimum:g} seconds (scheduler.refresh_seconds) to 365d (got {text!r})"
        )
    return seconds


def format_every(seconds: int | None) -> str | None:
    """The largest exact unit: 86400 → ``"1d"``, 5400 → ``"90m"``."""
    if seconds is None:
        return None
    for unit in ("d", "h", "m"):
        if seconds % UNIT_SECONDS[unit] == 0:
            return f"{seconds // UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def validate_web_source(
    runtime: Runtime, url: str, crawl: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """The start URL (normalised, see ``fetch_form``) and the full options, or InvalidInput."""
    normalized = fetch_form(url.strip()) if isinstance(url, str) else None
    if normalized is None:
        raise InvalidInput(f"url must be an absolute http(s) URL with a host, not {str(url)[:200]!r}")
    settings = runtime.settings.crawl
    try:
        precheck_url(
            normalized, AddressPolicy.from_settings(settings.allow_private_networks, settings.allowed_hosts)
        )
    except BlockedAddress as exc:
        raise InvalidInput(exc.message) from None
    options = parse_options(crawl)
    if options.engine == "firecrawl" and not settings.firecrawl_url:
        raise InvalidInput(
            "crawl.engine 'firecrawl' needs LOREBASE_CRAWL__FIRECRAWL_URL to be set on the server"
        )
    return normalized, options.model_dump()


def source_to_dict(source: Source) -> dict[str, Any]:
    return {
        "id": source.id,
        "type": source.type,
        "url": source.url,
        "crawl": source.options,
        "created_at": source.created_at.isoformat() if source.created_at else None,
        "last_refreshed_at": source.last_refreshed_at.isoformat() if source.last_refreshed_at else None,
        "refresh_every": format_every(source.refresh_seconds),
        "next_refresh_at": source.next_refresh_at.isoformat() if source.next_refresh_at else None,
    }


def list_sources(runtime: Runtime, p: Principal, kb_id: str) -> dict[str, Any]:
    """The KB's web sources with their schedules (``GET /kbs/{id}/sources``, the dashboard)."""
    with runtime.db.read_session() as s:
        kb = load_kb(s, p, kb_id)
        rows = s.execute(select(Source).where(Source.kb_id == kb.id).order_by(Source.created_at)).scalars()
        items = [source_to_dict(src) for src in rows]
    return {"items": items, "total": len(items)}


def create_source(
    s: Session,
    runtime: Runtime,
    kb: KnowledgeBase,
    pipeline: Pipeline,
    url: str,
    options: dict[str, Any],
    *,
    source_id: str | None = None,
    refresh_seconds: int | None = None,
) -> Source:
    now = utcnow()
    source = Source(
        id=source_id or new_id(),
        kb_id=kb.id,
        workspace_id=kb.workspace_id,
        type="web",
        url=url,
        options=options,
        created_at=now,
        refresh_seconds=refresh_seconds,
        next_refresh_at=now + timedelta(seconds=refresh_seconds) if refresh_seconds else None,
    )
    s.add(source)
    s.flush()
    enqueue_crawl(s, runtime, kb, pipeline, source)
    return source


def enqueue_crawl(
    s: Session, runtime: Runtime, kb: KnowledgeBase, pipeline: Pipeline, source: Source
) -> None:
    crawl_source.enqueue(
        s, runtime, workspace_id=kb.workspace_id, kb_id=kb.id, pipeline_id=pipeline.id, source_id=source.id
    )
    if kb.status == "failed":  # new work can rescue a KB that had nothing indexed
        kb.status = "processing"


def add_to_kb(
    runtime: Runtime,
    p: Principal,
    kb_id: str,
    url: str,
    crawl: dict[str, Any] | None,
    *,
    not_before: datetime | None = None,
    refresh_every: str | None = None,
) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        load_kb(s, p, kb_id)  # 404 before anything else
    normalized, options = validate_web_source(runtime, url, crawl)
    every = parse_every(refresh_every, minimum=runtime.settings.scheduler.refresh_seconds)
    start = scheduled_start(not_before)
    with runtime.db.session() as s:
        kb = load_kb(s, p, kb_id)
        pipeline = new_pipeline(s, kb, kind="crawl", not_before=start)
        source = create_source(s, runtime, kb, pipeline, normalized, options, refresh_seconds=every)
        result = {"pipeline_id": pipeline.id, "source": source_to_dict(source)}
    runtime.queue.notify()
    return result


def crawl_urls(
    runtime: Runtime, p: Principal, kb_id: str, urls: list[str], crawl: dict[str, Any] | None
) -> dict[str, Any]:
    """``lorebase ingest URL --kb NAME`` on an existing KB: a URL the KB already crawls is
    refreshed (only changes re-processed), a new one becomes a new web source; one pipeline."""
    checked = [validate_web_source(runtime, url, crawl) for url in urls]
    with runtime.db.session() as s:
        kb = load_kb(s, p, kb_id)
        known = {
            normalize_url(src.url or ""): src
            for src in s.execute(select(Source).where(Source.kb_id == kb.id, Source.type == "web")).scalars()
        }
        pipeline = new_pipeline(s, kb, kind="crawl")
        refreshed, added = [], []
        for url, options in checked:
            key = normalize_url(url)
            if key in known:
                enqueue_crawl(s, runtime, kb, pipeline, known[key])
                refreshed.append(source_to_dict(known[key]))
            else:
                source = create_source(s, runtime, kb, pipeline, url, options)
                known[key] = source
                added.append(source_to_dict(source))
        result = {"pipeline_id": pipeline.id, "refreshed": refreshed, "added": added}
    runtime.queue.notify()
    return result


def refresh(
    runtime: Runtime, p: Principal, kb_id: str, *, not_before: datetime | None = None
) -> dict[str, Any]:
    """Re-crawl every web source of the KB: only what changed is re-processed (from
    ``not_before``, when given)."""
    start = scheduled_start(not_before)
    with runtime.db.session() as s:
        kb = load_kb(s, p, kb_id)
        sources = list(
            s.execute(
                select(Source).where(Source.kb_id == kb.id, Source.type == "web").order_by(Source.created_at)
            ).scalars()
        )
        if not sources:
            raise InvalidInput("this knowledge base has no web sources to refresh")
        pipeline = new_pipeline(s, kb, kind="refresh", not_before=start)
        for source in sources:
            enqueue_crawl(s, runtime, kb, pipeline, source)
            if source.refresh_seconds:  # a refresh on request counts: the next is one period on
                source.next_refresh_at = (start or utcnow()) + timedelta(seconds=source.refresh_seconds)
        result = {"pipeline_id": pipeline.id, "sources": [source_to_dict(src) for src in sources]}
    runtime.queue.notify()
    return result


# -- scheduled refreshes ----------------------------------------------------------------------


def refresh_due(runtime: Runtime) -> list[str]:
    """Start a refresh of every web source whose ``next_refresh_at`` has passed (the periodic
    ``refresh_sources`` task); returns the pipelines started."""
    now = utcnow()
    with runtime.db.read_session() as s:
        due = s.execute(
            select(Source.id, Source.next_refresh_at)
            .where(Source.next_refresh_at <= now, Source.refresh_seconds.is_not(None))
            .order_by(Source.next_refresh_at)
            .limit(REFRESH_BATCH)
        ).all()
    started = [
        pid
        for sid, when in due
        if when is not None and (pid := _refresh_one(runtime, sid, when, now)) is not None
    ]
    if started:
        runtime.queue.notify()
    return started


def _refresh_one(runtime: Runtime, source_id: str, due_at: datetime, now: datetime) -> str | None:
    """One due source, one transaction: move ``next_refresh_at`` on (compare-and-set on the value
    read: of two workers only one moves it) and, unless its last crawl's pipeline is still going,
    start a ``refresh`` pipeline crawling it. Returns that pipeline's id, or None."""
    with runtime.db.session() as s:
        source = s.get(Source, source_id)
        if source is None or not source.refresh_seconds:
            return None
        moved = s.execute(
            update(Source)
            .where(Source.id == source_id, Source.next_refresh_at == due_at)
            .values(next_refresh_at=now + timedelta(seconds=source.refresh_seconds))
            .execution_options(synchronize_session=False)
            .returning(Source.id)
        ).scalar()
        if moved is None:
            return None  # another worker took this period
        if _crawl_in_flight(s, source_id):
            log.info("scheduled refresh of source %s skipped: its last crawl is still going", source_id)
            return None
        kb = s.get(KnowledgeBase, source.kb_id)
        if kb is None:
            return None
        pipeline = new_pipeline(s, kb, kind="refresh")
        enqueue_crawl(s, runtime, kb, pipeline, source)
        log.info("scheduled refresh of source %s: pipeline %s", source_id, pipeline.id)
        return pipeline.id


def _crawl_in_flight(s: Session, source_id: str) -> bool:
    """Whether the pipeline of the source's latest crawl job has not ended (its pages may still be
    processing after the crawl job itself ended)."""
    key = crawl_source.SPEC.concurrency_key({"source_id": source_id})
    status = s.execute(
        select(Pipeline.status)
        .join(Job, Job.pipeline_id == Pipeline.id)
        .where(Job.concurrency_key == key)
        .order_by(Job.created_at.desc())
        .limit(1)
    ).scalar()
    return status is not None and status not in PIPELINE_FINAL


class RefreshDueSources:
    """Job handler of the periodic ``refresh_sources`` task (idempotent: a second run finds the
    sources it refreshed no longer due)."""

    def run(self, ctx: JobContext[Runtime]) -> None:
        started = refresh_due(ctx.runtime)
        if started:
            log.info("started %d scheduled refreshes", len(started))

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        log.warning("scheduled refreshes failed: %s", message)
