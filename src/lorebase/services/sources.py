"""Web sources: adding one to a draft or a KB, and refreshing a KB's web sources.

A web source becomes a ``sources`` row and one ``crawl_source`` job per pipeline. The URL and
options are validated when the source is added, so that a typo or a refused address (the SSRF
guard's pre-check) is a 422 at once rather than a failed crawl later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorebase.crawl.guard import AddressPolicy, BlockedAddress, precheck_url
from lorebase.crawl.options import parse_options
from lorebase.crawl.urls import fetch_form, normalize_url
from lorebase.db.models import KnowledgeBase, Pipeline, Source, new_id, utcnow
from lorebase.errors import InvalidInput
from lorebase.pipeline.documents import new_pipeline
from lorebase.services.auth import Principal
from lorebase.services.kbs import load as load_kb
from lorebase.tasks import crawl_source

if TYPE_CHECKING:
    from lorebase.runtime import Runtime


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
    }


def create_source(
    s: Session,
    runtime: Runtime,
    kb: KnowledgeBase,
    pipeline: Pipeline,
    url: str,
    options: dict[str, Any],
    *,
    source_id: str | None = None,
) -> Source:
    source = Source(
        id=source_id or new_id(),
        kb_id=kb.id,
        workspace_id=kb.workspace_id,
        type="web",
        url=url,
        options=options,
        created_at=utcnow(),
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
    runtime: Runtime, p: Principal, kb_id: str, url: str, crawl: dict[str, Any] | None
) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        load_kb(s, p, kb_id)  # 404 before anything else
    normalized, options = validate_web_source(runtime, url, crawl)
    with runtime.db.session() as s:
        kb = load_kb(s, p, kb_id)
        pipeline = new_pipeline(s, kb, kind="crawl")
        source = create_source(s, runtime, kb, pipeline, normalized, options)
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


def refresh(runtime: Runtime, p: Principal, kb_id: str) -> dict[str, Any]:
    """Re-crawl every web source of the KB: only what changed is re-processed."""
    with runtime.db.session() as s:
        kb = load_kb(s, p, kb_id)
        sources = list(
            s.execute(
                select(Source).where(Source.kb_id == kb.id, Source.type == "web").order_by(Source.created_at)
            ).scalars()
        )
        if not sources:
            raise InvalidInput("this knowledge base has no web sources to refresh")
        pipeline = new_pipeline(s, kb, kind="refresh")
        for source in sources:
            enqueue_crawl(s, runtime, kb, pipeline, source)
        result = {"pipeline_id": pipeline.id, "sources": [source_to_dict(src) for src in sources]}
    runtime.queue.notify()
    return result
