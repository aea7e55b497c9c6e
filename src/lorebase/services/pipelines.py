"""Pipeline executions as the API and the CLI see them: reads, the event log since an id, and
cancel / pause / resume / retry.

Progress (counts, phase, message) is ``pipeline/progress.py``; settling (a pipeline's end, and
the invariant that guards it) is ``services/settle.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lorebase.db import events
from lorebase.db.models import Document, Job, KnowledgeBase, Pipeline, PipelineEvent, utcnow
from lorebase.db.states import (
    DOCUMENT_RETRYABLE,
    PIPELINE_FINAL,
    DocumentStatus,
    JobStatus,
    PipelineStatus,
    transition,
)
from lorebase.errors import Conflict, InvalidInput, NotFound
from lorebase.pipeline import progress
from lorebase.services.auth import Principal
from lorebase.services.events import publish_pipeline
from lorebase.services.settle import settle
from lorebase.tasks import process_document

if TYPE_CHECKING:
    from lorebase.runtime import Runtime


def scheduled_start(not_before: datetime | None) -> datetime | None:
    """A pipeline's ``not_before`` as given to finalize, ``documents``, ``sources`` or ``refresh``:
    UTC, or None to start now (none given, or a time already past). A time without a zone is
    refused: "09:00" of which zone would be a guess."""
    if not_before is None:
        return None
    if not_before.tzinfo is None or not_before.utcoffset() is None:
        raise InvalidInput("not_before needs a timezone (ISO 8601, e.g. 2026-12-08T09:00:00Z)")
    at = not_before.astimezone(UTC)
    return at if at > utcnow() else None


# -- reads ------------------------------------------------------------------------------------


def _load(s: Session, p: Principal, pipeline_id: str) -> Pipeline:
    row = s.execute(
        select(Pipeline).where(Pipeline.id == pipeline_id, Pipeline.workspace_id == p.workspace_id)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"pipeline {pipeline_id} not found")
    return row


def get(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        return progress.to_dict(_load(s, p, pipeline_id))


def events_since(
    runtime: Runtime, p: Principal, pipeline_id: str, after: int, limit: int = 500
) -> tuple[list[dict[str, Any]], bool]:
    """The pipeline's events after ``after`` (at most ``limit``), and whether the story is over:
    the pipeline has ended and the watcher, with these, has its final ``end`` event."""
    with runtime.db.read_session() as s:
        row = _load(s, p, pipeline_id)
        batch = events.read(s, pipeline_id, after, limit)
        seen = batch[-1]["id"] if batch else after
        over = False
        if row.status in PIPELINE_FINAL and seen >= row.event_seq:
            if batch and batch[-1]["id"] == row.event_seq:  # the log's last event is in hand
                last_kind = batch[-1]["event"]
            else:
                last_kind = s.execute(
                    select(PipelineEvent.kind).where(
                        PipelineEvent.pipeline_id == pipeline_id, PipelineEvent.seq == row.event_seq
                    )
                ).scalar()
            over = last_kind == events.END
        return batch, over


# -- control ----------------------------------------------------------------------------------


def cancel(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    """Pending jobs are cancelled now; running ones stop at their next batch boundary."""
    with runtime.db.session() as s:
        row = _load(s, p, pipeline_id)
        if row.status in PIPELINE_FINAL:
            raise Conflict(f"pipeline is already {row.status}")
        row.status = PipelineStatus.CANCELLING
        s.execute(
            update(Job)
            .where(Job.pipeline_id == pipeline_id, Job.status == JobStatus.PENDING)
            .values(status=JobStatus.CANCELLED, finished_at=utcnow(), last_error="cancelled by request")
        )
        event = progress.changed(s, row)
    publish_pipeline(runtime, pipeline_id, "status", event)
    settle(runtime, pipeline_id)
    return get(runtime, p, pipeline_id)


def pause(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    with runtime.db.session() as s:
        row = _load(s, p, pipeline_id)
        if row.status not in (PipelineStatus.QUEUED, PipelineStatus.RUNNING):
            raise Conflict(f"only a queued or running pipeline can be paused (it is {row.status})")
        row.status, row.message = PipelineStatus.PAUSED, "paused by request; finished work is kept"
        event = progress.changed(s, row)
    publish_pipeline(runtime, pipeline_id, "status", event)
    return get(runtime, p, pipeline_id)


def resume(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    with runtime.db.session() as s:
        row = _load(s, p, pipeline_id)
        if row.status != PipelineStatus.PAUSED:
            raise Conflict(f"only a paused pipeline can be resumed (it is {row.status})")
        row.status = PipelineStatus.RUNNING
        event = progress.changed(s, row)
    publish_pipeline(runtime, pipeline_id, "status", event)
    runtime.queue.notify()
    settle(runtime, pipeline_id)
    return get(runtime, p, pipeline_id)


def retry(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    """Re-run the pipeline's failed and cancelled documents (dead and failed jobs alike), one
    ``process_document`` job each."""
    with runtime.db.session() as s:
        row = _load(s, p, pipeline_id)
        if row.status not in PIPELINE_FINAL:
            raise Conflict(f"the pipeline is still {row.status}; retry once it has ended")
        if row.kind == progress.REINDEX:
            raise Conflict(
                "a re-index is not retried: change the config again (PATCH the knowledge base) "
                "to build a new version"
            )
        retried = transition(
            s,
            [Document.pipeline_id == pipeline_id, Document.status.in_(DOCUMENT_RETRYABLE)],
            DocumentStatus.PENDING,
        )
        if not retried:
            raise Conflict("the pipeline has no failed or cancelled documents to retry")
        process_document.enqueue(
            s,
            runtime,
            [(doc.id, 0) for doc in retried],
            workspace_id=row.workspace_id,
            pipeline_id=row.id,
            kb_id=row.kb_id,
            grouped=False,
        )
        row.status, row.finished_at, row.error, row.progress = PipelineStatus.RUNNING, None, None, 0
        kb = s.get(KnowledgeBase, row.kb_id)
        if kb is not None and kb.status == "failed":
            kb.status = "processing"
        event = progress.changed(s, row)
    publish_pipeline(runtime, pipeline_id, "status", event)
    runtime.queue.notify()
    return get(runtime, p, pipeline_id)
