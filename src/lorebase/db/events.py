"""The pipeline event log (``pipeline_events``): what a pipeline's watchers are told.

``pipeline`` (the pipeline as ``GET /pipelines/{id}`` shows it, on every progress step and
status change), ``document`` (one document's transition) and ``end`` (the final state). Each is
recorded by :func:`record` in the transaction of the change it reports, numbered per pipeline
by bumping ``pipelines.event_seq``: that UPDATE holds the pipeline row until commit, so sequence
order is commit order and a reader that has seen event N has seen every event before it.
``GET /pipelines/{id}/events`` (SSE) and ``lorebase ingest`` read the log with :func:`read`; a
reconnect resumes after its ``Last-Event-ID``. Live notices (best effort, pub/sub) are
``services/events.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from lorebase.db.models import Document, Pipeline, PipelineEvent, utcnow

PIPELINE, DOCUMENT, END = "pipeline", "document", "end"
#: the columns a ``document`` event carries: UPDATE ... RETURNING these, then ``record_documents``
DOCUMENT_COLUMNS = (
    Document.id,
    Document.pipeline_id,
    Document.status,
    Document.error,
    Document.error_kind,
    Document.chunk_count,
    Document.title,
    Document.filename,
)


def jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 (as the API renders them), recursively; for JSON columns."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def record(s: Session, pipeline_id: str, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Append ``(kind, data)`` events to the pipeline's log in the caller's transaction."""
    if not events:
        return
    last = s.execute(
        update(Pipeline)
        .where(Pipeline.id == pipeline_id)
        .values(event_seq=Pipeline.event_seq + len(events))
        .returning(Pipeline.event_seq)
        .execution_options(synchronize_session=False)
    ).scalar()
    if last is None:  # the pipeline is gone (its KB deleted): nobody to tell
        return
    first, now = last - len(events) + 1, utcnow()
    s.execute(
        insert(PipelineEvent),
        [
            {
                "pipeline_id": pipeline_id,
                "seq": first + i,
                "kind": kind,
                "data": jsonable(data),
                "created_at": now,
            }
            for i, (kind, data) in enumerate(events)
        ],
    )


def document_event(row: Any) -> dict[str, Any]:
    """The data of a ``document`` event, from a Document or a row of ``DOCUMENT_COLUMNS``."""
    return {
        "document_id": row.id,
        "status": row.status,
        "error": row.error,
        "error_kind": row.error_kind,
        "chunk_count": row.chunk_count,
        "title": row.title,
        "filename": row.filename,
    }


def record_documents(s: Session, rows: Iterable[Any]) -> None:
    """A ``document`` event per row (Documents, or rows of ``DOCUMENT_COLUMNS``), on each row's
    own pipeline; rows without one (no pipeline is watching) are left out."""
    by_pipeline: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for row in rows:
        if row.pipeline_id:
            by_pipeline[row.pipeline_id].append((DOCUMENT, document_event(row)))
    for pipeline_id in sorted(by_pipeline):  # one lock order for every writer
        record(s, pipeline_id, by_pipeline[pipeline_id])


def read(s: Session, pipeline_id: str, after: int, limit: int = 500) -> list[dict[str, Any]]:
    """Events with ``seq > after`` in order: ``{"id", "event", "data"}`` (the SSE fields)."""
    rows = s.execute(
        select(PipelineEvent.seq, PipelineEvent.kind, PipelineEvent.data)
        .where(PipelineEvent.pipeline_id == pipeline_id, PipelineEvent.seq > after)
        .order_by(PipelineEvent.seq)
        .limit(limit)
    ).all()
    return [{"id": r.seq, "event": r.kind, "data": r.data} for r in rows]
