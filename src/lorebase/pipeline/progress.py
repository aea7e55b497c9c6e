"""A pipeline's progress as its watchers see it: counts, phase, progress 0-99 and message,
recomputed in the transaction of each change (chunks saved, a batch embedded, pages committed)
and recorded in its event log; and the pipeline as ``GET /pipelines/{id}`` shows it.

Counts of documents are derived from the documents themselves (never drift); chunk counters
are incremented in the same transactions that write the chunks and vectors.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lorebase.db import events
from lorebase.db.models import Document, Job, Pipeline, utcnow
from lorebase.db.states import DOCUMENT_FINAL, JOB_ACTIVE, PIPELINE_FINAL, DocumentStatus
from lorebase.tasks import crawl_source

#: the kind of pipeline that builds a KB config version (``services/versions.py``)
REINDEX = "reindex"


def doc_counts(s: Session, pipeline_id: str) -> dict[str, int]:
    rows = s.execute(
        select(Document.status, func.count())
        .where(Document.pipeline_id == pipeline_id)
        .group_by(Document.status)
    ).all()
    return {status: n for status, n in rows}


def refresh_progress(s: Session, pipeline_id: str) -> None:
    """Recompute document counts, progress (0-99 until settled), phase and message."""
    p = s.get(Pipeline, pipeline_id)
    if p is None or p.status in PIPELINE_FINAL:
        return
    if p.kind == REINDEX:
        _reindex_progress(s, p)
        return
    counts = doc_counts(s, pipeline_id)
    total = max(p.documents_total, sum(counts.values()), 1)
    final = sum(counts.get(k, 0) for k in DOCUMENT_FINAL)
    parsed = final + counts.get(DocumentStatus.EMBEDDING, 0)
    p.documents_done = final
    p.documents_failed = counts.get(DocumentStatus.FAILED, 0)
    share_parsed = parsed / total
    share_embedded = (
        (p.chunks_indexed / p.chunks_created) * share_parsed if p.chunks_created else final / total
    )
    p.progress = min(99, int(100 * (0.25 * share_parsed + 0.75 * min(1.0, share_embedded))))
    crawling = bool(p.pages_discovered) and _crawling(s, pipeline_id)
    if crawling:
        p.phase = "crawling"
        # the total is still growing: the crawl is worth a third of the bar until it ends
        p.progress = min(p.progress, int(33 * p.pages_fetched / max(p.pages_discovered, 1)))
    elif parsed < total:
        p.phase = "processing"
    else:
        p.phase = "embedding"
    pages = ""
    if p.pages_discovered:
        pages = f"Fetched {p.pages_fetched} of {p.pages_discovered} pages ({p.pages_skipped} skipped); "
    p.message = (
        f"{pages}Processed {parsed} of {p.documents_total} documents; "
        f"indexed {p.chunks_indexed} of {p.chunks_created} chunks"
    )
    p.updated_at = utcnow()
    events.record(s, pipeline_id, [(events.PIPELINE, to_dict(p))])


def _reindex_progress(s: Session, p: Pipeline) -> None:
    """A re-index owns no documents: its counts are the documents it chunked for the version
    (kept by ``pipeline/reindex.py``) and the version's chunks embedded."""
    total = max(p.documents_total, 1)
    share_parsed = min(1.0, p.documents_done / total)
    share_embedded = (p.chunks_indexed / p.chunks_created) * share_parsed if p.chunks_created else 0.0
    p.progress = min(99, int(100 * (0.25 * share_parsed + 0.75 * min(1.0, share_embedded))))
    p.phase = "processing" if share_parsed < 1.0 else "embedding"
    p.message = (
        f"Re-indexed {p.documents_done} of {p.documents_total} documents; "
        f"indexed {p.chunks_indexed} of {p.chunks_created} chunks"
    )
    p.updated_at = utcnow()
    events.record(s, p.id, [(events.PIPELINE, to_dict(p))])


def _crawling(s: Session, pipeline_id: str) -> bool:
    return bool(
        s.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.pipeline_id == pipeline_id, Job.type == crawl_source.NAME, Job.status.in_(JOB_ACTIVE))
        ).scalar_one()
    )


COUNT_FIELDS = (
    "pages_discovered",
    "pages_fetched",
    "pages_skipped",
    "documents_total",
    "documents_done",
    "documents_failed",
    "documents_skipped",
    "chunks_created",
    "chunks_embedded",
    "chunks_indexed",
)


def to_dict(p: Pipeline) -> dict[str, Any]:
    eta = None
    if p.status not in PIPELINE_FINAL and p.started_at and 0 < p.progress < 100:
        elapsed = (utcnow() - p.started_at).total_seconds()
        eta = round(elapsed * (100 - p.progress) / p.progress, 1)
    return {
        "id": p.id,
        "kb_id": p.kb_id,
        "kind": p.kind,
        "status": p.status,
        "phase": p.phase,
        "progress": p.progress,
        "counts": {k: getattr(p, k) for k in COUNT_FIELDS},
        "message": p.message,
        "error": p.error,
        "created_at": p.created_at,
        "started_at": p.started_at,
        "finished_at": p.finished_at,
        "not_before": p.not_before,
        "eta_seconds": eta,
    }


def notice(p: Pipeline) -> dict[str, Any]:
    """The small part of a pipeline a live notice carries (the full one is :func:`to_dict`)."""
    return {
        "kb_id": p.kb_id,
        "status": p.status,
        "phase": p.phase,
        "progress": p.progress,
        "message": p.message,
        "error": p.error,
    }


def changed(s: Session, p: Pipeline, kind: str = events.PIPELINE) -> dict[str, Any]:
    """A status change of ``p``: recorded in its event log (this transaction); returns the live
    notice to publish once it has committed (``services.events.publish_pipeline``)."""
    events.record(s, p.id, [(kind, to_dict(p))])
    return notice(p)
