"""Settling a pipeline: its final state once no work remains, and the invariant that guards it.

**The settle invariant.** A pipeline settles (takes a final state) only when no work remains:

1. no job of the pipeline is ``pending`` or ``running``;
2. every document of the pipeline is final (``indexed``, ``failed``, ``skipped``, ``cancelled``),
   so no chunk of its documents waits for the embedder.

When (1) holds and (2) does not, some work is *uncovered*: no job will ever finish it. Settling
then closes nothing. It gives each such document what it needs: ``failed`` with the error of
its own latest job when that job ended ``failed`` or ``dead`` (the only way a document fails
at settle), ``indexed`` when its chunks are all embedded already, and otherwise a new job that
finishes it (``process_document`` before embedding, ``embed_chunks`` during it), and settles
later. The engine keeps work covered by construction (a job is superseded only by a pending
twin that does the same work; a lost worker's job goes back to ``pending`` or ends ``dead``
with its task's ``on_failure`` in the same transaction; a release is a return to ``pending``),
so this repair is a safety net, logged and counted on the pipeline (``repairs``), and bounded
(:data:`MAX_REPAIRS`) so that a handler that would never finish a document cannot loop.
A cancelling pipeline is the exception: its unfinished documents end ``cancelled``.
``tests/integration/services/test_settle_invariant.py`` checks the invariant over random interleavings
of claim, reap, supersede, release and success.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lorebase.db import events
from lorebase.db.models import Chunk, Document, Job, KnowledgeBase, Pipeline, utcnow
from lorebase.db.states import (
    DOCUMENT_FINAL,
    JOB_ACTIVE,
    JOB_GAVE_UP,
    PIPELINE_FINAL,
    PIPELINE_SETTLING,
    DocumentStatus,
    JobStatus,
    PipelineStatus,
    transition,
)
from lorebase.pipeline import progress
from lorebase.services import notifications, reindex
from lorebase.services.events import publish_pipeline
from lorebase.tasks import embed_chunks, process_document

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.pipelines")

#: repair rounds a pipeline may need before its uncovered documents fail (see the module doc)
MAX_REPAIRS = 10


def settle(runtime: Runtime, pipeline_id: str) -> None:
    """When no work of the pipeline remains, give it (and its KB) a final state; when its jobs
    have ended but work remains uncovered, queue what finishes it (the invariant above).

    Called after every job, so the common case (work remains) is a cheap read that writes nothing;
    progress is kept current by the jobs themselves.
    """
    with runtime.db.read_session() as s:
        status = s.execute(select(Pipeline.status).where(Pipeline.id == pipeline_id)).scalar()
        if status is None or status in PIPELINE_FINAL or status == PipelineStatus.PAUSED:
            return
        if status != PipelineStatus.CANCELLING and _active_jobs(s, pipeline_id):
            return
    with runtime.db.session() as s:
        # locked: two processes settling at once (PostgreSQL) would both end it (two `end` events,
        # two notifications); the second waits here, then sees it ended. SQLite writers are serial.
        p = s.get(Pipeline, pipeline_id, with_for_update=True)
        if p is None or p.status in PIPELINE_FINAL:
            return
        cancelling = p.status == PipelineStatus.CANCELLING
        if cancelling:  # jobs that went back to pending after the cancel (reaped, retried)
            s.execute(
                update(Job)
                .where(Job.pipeline_id == pipeline_id, Job.status == JobStatus.PENDING)
                .values(status=JobStatus.CANCELLED, finished_at=utcnow(), last_error="cancelled by request")
            )
        if _active_jobs(s, pipeline_id) or p.status == PipelineStatus.PAUSED:
            progress.refresh_progress(s, pipeline_id)
            return
        if not cancelling and _more_work(s, runtime, p):
            progress.refresh_progress(s, pipeline_id)
            event = None
        else:
            if cancelling:  # its documents still mid-way end cancelled
                transition(
                    s,
                    [Document.pipeline_id == p.id, Document.status.not_in(DOCUMENT_FINAL)],
                    DocumentStatus.CANCELLED,
                    error="cancelled by request",
                )
            event = _end(s, runtime, p)
    if event is None:  # work was queued again: wake the workers
        runtime.queue.notify()
        return
    publish_pipeline(runtime, pipeline_id, "status", event)


def sweep(runtime: Runtime) -> None:
    """Settle every unfinished pipeline whose jobs have all ended (after crashes, for instance)."""
    with runtime.db.read_session() as s:
        ids = s.execute(select(Pipeline.id).where(Pipeline.status.in_(PIPELINE_SETTLING))).scalars().all()
    for pid in ids:
        settle(runtime, pid)


def _active_jobs(s: Session, pipeline_id: str) -> int:
    return s.execute(
        select(func.count())
        .select_from(Job)
        .where(Job.pipeline_id == pipeline_id, Job.status.in_(JOB_ACTIVE))
    ).scalar_one()


def _more_work(s: Session, runtime: Runtime, p: Pipeline) -> bool:
    """Work of ``p`` that no job covers, queued again (True); False when it may end."""
    if p.kind == progress.REINDEX:  # a re-index owns no documents: its version says what is left
        return reindex.more_work(s, runtime, p)
    return _cover_leftovers(s, runtime, p)


def _end(s: Session, runtime: Runtime, p: Pipeline) -> dict[str, Any]:
    """Give ``p`` its final state (every document is final); returns the live notice."""
    now = utcnow()
    if p.kind == progress.REINDEX:
        reindex.end(s, runtime, p)
        p.progress, p.phase, p.finished_at, p.updated_at = 100, "done", now, now
        p.started_at = p.started_at or now
        event = progress.changed(s, p, events.END)
        notifications.enqueue_pipeline_end(s, runtime, p)
        return event
    counts = progress.doc_counts(s, p.id)
    failed, indexed = counts.get(DocumentStatus.FAILED, 0), counts.get(DocumentStatus.INDEXED, 0)
    if p.status == PipelineStatus.CANCELLING:
        p.status = PipelineStatus.CANCELLED
    elif failed == 0:
        p.status = PipelineStatus.COMPLETED
    elif indexed > 0 or p.documents_skipped or p.kind == "refresh":
        # some documents made it, or were already there unchanged: the KB serves them
        p.status = PipelineStatus.COMPLETED_WITH_ERRORS
    else:
        p.status = PipelineStatus.FAILED
        p.error = f"all {failed} documents failed"
    p.documents_done = sum(counts.get(k, 0) for k in DOCUMENT_FINAL)
    p.documents_failed = failed
    p.progress, p.phase, p.finished_at, p.updated_at = 100, "done", now, now
    p.started_at = p.started_at or now
    pages = ""
    if p.pages_discovered:
        pages = (
            f"{p.pages_fetched} of {p.pages_discovered} pages fetched, "
            f"{p.pages_skipped} unchanged or skipped; "
        )
    p.message = (
        f"{p.status.replace('_', ' ')}: {pages}{indexed} indexed, {failed} failed, "
        f"{p.documents_skipped} unchanged; {p.chunks_indexed} chunks indexed"
    )
    _settle_kb(s, p.kb_id, now)
    event = progress.changed(s, p, events.END)
    notifications.enqueue_pipeline_end(s, runtime, p)  # same transaction: never lost, never twice
    return event


def _cover_leftovers(s: Session, runtime: Runtime, p: Pipeline) -> bool:
    """Documents not final while no job of ``p`` is active (the invariant's repair): fail those
    whose own latest job ended failed or dead, with its error; index those whose chunks are
    all embedded; queue a job for the rest. Returns whether any job was queued."""
    open_docs = s.execute(
        select(Document.id, Document.status, Document.size_bytes).where(
            Document.pipeline_id == p.id, Document.status.not_in(DOCUMENT_FINAL)
        )
    ).all()
    if not open_docs:
        return False
    before_embedding = {d.id for d in open_docs if d.status != DocumentStatus.EMBEDDING}
    process_jobs = _latest_process_jobs(s, p.id, before_embedding)
    embed_job = s.execute(
        select(Job.status, Job.last_error, Job.error_kind)
        .where(Job.pipeline_id == p.id, Job.type == embed_chunks.NAME)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(1)
    ).first()
    waiting = set(
        s.execute(
            select(Chunk.document_id)
            .where(Chunk.document_id.in_([d.id for d in open_docs]), Chunk.embedded.is_(False))
            .distinct()
        ).scalars()
    )
    failed: list[tuple[str, str, str]] = []
    indexed: list[str] = []
    to_process: list[tuple[str, int]] = []
    to_embed: list[str] = []
    for doc in open_docs:
        if doc.id not in before_embedding:
            if doc.id not in waiting:
                indexed.append(doc.id)  # what the embed loop's last batch would have done
            elif embed_job is not None and embed_job.status in JOB_GAVE_UP:
                message = f"embedding failed: {embed_job.last_error}"
                failed.append((doc.id, message, embed_job.error_kind or "transient"))
            else:
                to_embed.append(doc.id)
            continue
        job = process_jobs.get(doc.id)
        if job is not None and job.status in JOB_GAVE_UP:
            failed.append((doc.id, job.last_error or "processing failed", job.error_kind or "transient"))
        else:
            to_process.append((doc.id, doc.size_bytes or 0))
    if (to_process or to_embed) and p.repairs >= MAX_REPAIRS:
        message = f"processing stopped before this document finished (queued again {MAX_REPAIRS} times)"
        failed += [(doc_id, message, "transient") for doc_id, _ in to_process]
        failed += [(doc_id, message, "transient") for doc_id in to_embed]
        to_process, to_embed = [], []
    for doc_id, message, kind in failed:
        transition(s, Document.id == doc_id, DocumentStatus.FAILED, error=message, error_kind=kind)
    if indexed:
        transition(s, Document.id.in_(indexed), DocumentStatus.INDEXED, indexed_at=utcnow())
    if not (to_process or to_embed):
        return False
    p.repairs = (p.repairs or 0) + 1
    log.warning(
        "pipeline %s: %d document(s) had no job left to finish them; queued again (repair %d)",
        p.id,
        len(to_process) + len(to_embed),
        p.repairs,
    )
    process_document.enqueue(
        s, runtime, to_process, workspace_id=p.workspace_id, pipeline_id=p.id, kb_id=p.kb_id
    )
    if to_embed:
        embed_chunks.enqueue(s, runtime, workspace_id=p.workspace_id, pipeline_id=p.id, kb_id=p.kb_id)
    return True


def _latest_process_jobs(s: Session, pipeline_id: str, doc_ids: set[str]) -> dict[str, Any]:
    """The latest ``process_document`` job of each of ``doc_ids`` in the pipeline (a job of one
    document names it in ``document_id``; a group's are in its payload)."""
    if not doc_ids:
        return {}
    rows = s.execute(
        select(Job.status, Job.last_error, Job.error_kind, Job.payload)
        .where(Job.pipeline_id == pipeline_id, Job.type == process_document.NAME)
        .order_by(Job.created_at, Job.id)
    ).all()
    latest: dict[str, Any] = {}
    for row in rows:
        for doc_id in process_document.document_ids(row.payload or {}):
            if doc_id in doc_ids:
                latest[doc_id] = row
    return latest


def _settle_kb(s: Session, kb_id: str, now: datetime) -> None:
    kb = s.get(KnowledgeBase, kb_id)
    if kb is None or kb.status != "processing":
        return
    busy = s.execute(
        select(func.count())
        .select_from(Pipeline)
        .where(Pipeline.kb_id == kb_id, Pipeline.status.not_in(PIPELINE_FINAL))
    ).scalar_one()
    if busy:
        return
    indexed = s.execute(
        select(func.count())
        .select_from(Document)
        .where(Document.kb_id == kb_id, Document.status == DocumentStatus.INDEXED)
    ).scalar_one()
    if indexed:
        kb.status, kb.processed_at, kb.error = "ready", now, None
    else:
        kb.status, kb.error = "failed", "no document could be indexed"
