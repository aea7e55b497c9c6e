"""Pipeline executions: progress, settling when work ends, and cancel / pause / resume / retry.

Counts of documents are derived from the documents themselves (never drift); chunk counters
are incremented in the same transactions that write the chunks and vectors.

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
``tests/integration/test_settle_invariant.py`` checks the invariant over random interleavings
of claim, reap, supersede, release and success.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lorebase.db.models import Chunk, Document, Job, KnowledgeBase, Pipeline, PipelineEvent, utcnow
from lorebase.errors import Conflict, NotFound
from lorebase.services import events, notifications
from lorebase.services.auth import Principal
from lorebase.services.documents import CRAWL_JOB, EMBED_JOB, PROCESS_JOB
from lorebase.services.events import pipeline_state, publish_pipeline

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.pipelines")

FINAL_PIPELINE = ("completed", "completed_with_errors", "failed", "cancelled")
FINAL_DOC = ("indexed", "failed", "skipped", "cancelled")
ACTIVE_JOB = ("pending", "running")
#: repair rounds a pipeline may need before its uncovered documents fail (see the module doc)
MAX_REPAIRS = 10


def _doc_counts(s: Session, pipeline_id: str) -> dict[str, int]:
    rows = s.execute(
        select(Document.status, func.count())
        .where(Document.pipeline_id == pipeline_id)
        .group_by(Document.status)
    ).all()
    return {status: n for status, n in rows}


def refresh_progress(s: Session, pipeline_id: str) -> None:
    """Recompute document counts, progress (0-99 until settled), phase and message."""
    p = s.get(Pipeline, pipeline_id)
    if p is None or p.status in FINAL_PIPELINE:
        return
    counts = _doc_counts(s, pipeline_id)
    total = max(p.documents_total, sum(counts.values()), 1)
    final = sum(counts.get(k, 0) for k in FINAL_DOC)
    parsed = final + counts.get("embedding", 0)
    p.documents_done = final
    p.documents_failed = counts.get("failed", 0)
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


def _crawling(s: Session, pipeline_id: str) -> bool:
    return bool(
        s.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.pipeline_id == pipeline_id, Job.type == CRAWL_JOB, Job.status.in_(ACTIVE_JOB))
        ).scalar_one()
    )


def settle(runtime: Runtime, pipeline_id: str) -> None:
    """When no work of the pipeline remains, give it (and its KB) a final state; when only jobs
    have ended but work remains uncovered, queue what finishes it (the invariant above).

    Called after every job, so the common case (work remains) is a cheap read that writes nothing;
    progress is kept current by the jobs themselves.
    """
    with runtime.db.read_session() as s:
        status = s.execute(select(Pipeline.status).where(Pipeline.id == pipeline_id)).scalar()
        if status is None or status in FINAL_PIPELINE or status == "paused":
            return
        if status != "cancelling" and _active_jobs(s, pipeline_id):
            return
    with runtime.db.session() as s:
        # locked: two processes settling at once (PostgreSQL) would both end it (two `end` events,
        # two notifications); the second waits here, then sees it ended. SQLite writers are serial.
        p = s.get(Pipeline, pipeline_id, with_for_update=True)
        if p is None or p.status in FINAL_PIPELINE:
            return
        if p.status == "cancelling":  # jobs that went back to pending after the cancel (reaped, retried)
            s.execute(
                update(Job)
                .where(Job.pipeline_id == pipeline_id, Job.status == "pending")
                .values(status="cancelled", finished_at=utcnow(), last_error="cancelled by request")
            )
        if _active_jobs(s, pipeline_id) or p.status == "paused":
            refresh_progress(s, pipeline_id)
            return
        if p.status != "cancelling" and _cover_leftovers(s, runtime, p):
            refresh_progress(s, pipeline_id)
            event = None
        else:
            _close_cancelled(s, p)
            event = _end(s, runtime, p)
    if event is None:  # work was queued again: wake the workers
        runtime.queue.notify()
        return
    publish_pipeline(runtime, pipeline_id, "status", event)


def _end(s: Session, runtime: Runtime, p: Pipeline) -> dict[str, Any]:
    """Give ``p`` its final state (every document is final); returns the live notice."""
    counts = _doc_counts(s, p.id)
    failed, indexed = counts.get("failed", 0), counts.get("indexed", 0)
    now = utcnow()
    if p.status == "cancelling":
        p.status = "cancelled"
    elif failed == 0:
        p.status = "completed"
    elif indexed > 0 or p.documents_skipped or p.kind == "refresh":
        # some documents made it, or were already there unchanged: the KB serves them
        p.status = "completed_with_errors"
    else:
        p.status = "failed"
        p.error = f"all {failed} documents failed"
    p.documents_done = sum(counts.get(k, 0) for k in FINAL_DOC)
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
    event = _changed(s, p, events.END)
    notifications.enqueue_pipeline_end(s, runtime, p)  # same transaction: never lost, never twice
    return event


def _active_jobs(s: Session, pipeline_id: str) -> int:
    return s.execute(
        select(func.count())
        .select_from(Job)
        .where(Job.pipeline_id == pipeline_id, Job.status.in_(ACTIVE_JOB))
    ).scalar_one()


def _close_cancelled(s: Session, p: Pipeline) -> None:
    """A cancelled pipeline's documents still mid-way end ``cancelled``."""
    if p.status != "cancelling":
        return
    open_docs = select(Document.id).where(Document.pipeline_id == p.id, Document.status.not_in(FINAL_DOC))
    closed = s.execute(
        update(Document)
        .where(Document.id.in_(open_docs))
        .values(status="cancelled", error="cancelled by request", updated_at=utcnow())
        .returning(*events.DOCUMENT_COLUMNS)
    ).all()
    events.record_documents(s, closed)


def _cover_leftovers(s: Session, runtime: Runtime, p: Pipeline) -> bool:
    """Documents not final while no job of ``p`` is active (the invariant's repair): fail those
    whose own latest job ended failed or dead, with its error; index those whose chunks are
    all embedded; queue a job for the rest. Returns whether any job was queued."""
    from lorebase.pipeline.process import enqueue_embedding
    from lorebase.services.documents import INTERACTIVE_PRIORITY, PROCESS_JOB, group_documents

    open_docs = s.execute(
        select(Document.id, Document.status, Document.size_bytes).where(
            Document.pipeline_id == p.id, Document.status.not_in(FINAL_DOC)
        )
    ).all()
    if not open_docs:
        return False
    process_jobs = _latest_process_jobs(s, p.id, {d.id for d in open_docs if d.status != "embedding"})
    embed_job = s.execute(
        select(Job.status, Job.last_error, Job.error_kind)
        .where(Job.pipeline_id == p.id, Job.type == EMBED_JOB)
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
        if doc.status == "embedding":
            if doc.id not in waiting:
                indexed.append(doc.id)
            elif embed_job is not None and embed_job.status in ("failed", "dead"):
                message = f"embedding failed: {embed_job.last_error}"
                failed.append((doc.id, message, embed_job.error_kind or "transient"))
            else:
                to_embed.append(doc.id)
            continue
        job = process_jobs.get(doc.id)
        if job is not None and job.status in ("failed", "dead"):
            failed.append((doc.id, job.last_error or "processing failed", job.error_kind or "transient"))
        else:
            to_process.append((doc.id, doc.size_bytes or 0))
    if (to_process or to_embed) and p.repairs >= MAX_REPAIRS:
        message = f"processing stopped before this document finished (queued again {MAX_REPAIRS} times)"
        failed += [(doc_id, message, "transient") for doc_id, _ in to_process]
        failed += [(doc_id, message, "transient") for doc_id in to_embed]
        to_process, to_embed = [], []
    now = utcnow()
    for doc_id, message, kind in failed:
        rows = s.execute(
            update(Document)
            .where(Document.id == doc_id)
            .values(status="failed", error=message, error_kind=kind, updated_at=now)
            .returning(*events.DOCUMENT_COLUMNS)
        ).all()
        events.record_documents(s, rows)
    if indexed:
        rows = s.execute(
            update(Document)
            .where(Document.id.in_(indexed))
            .values(status="indexed", indexed_at=now, updated_at=now)
            .returning(*events.DOCUMENT_COLUMNS)
        ).all()
        events.record_documents(s, rows)
    if not (to_process or to_embed):
        return False
    p.repairs = (p.repairs or 0) + 1
    log.warning(
        "pipeline %s: %d document(s) had no job left to finish them; queued again (repair %d)",
        p.id,
        len(to_process) + len(to_embed),
        p.repairs,
    )
    for group in group_documents(to_process):
        runtime.queue.enqueue(
            s,
            type=PROCESS_JOB,
            workspace_id=p.workspace_id,
            pipeline_id=p.id,
            kb_id=p.kb_id,
            document_id=group[0] if len(group) == 1 else None,
            payload={"document_id": group[0]} if len(group) == 1 else {"document_ids": group},
            priority=INTERACTIVE_PRIORITY,
        )
    if to_embed:
        enqueue_embedding(s, runtime, workspace_id=p.workspace_id, pipeline_id=p.id, kb_id=p.kb_id)
    return True


def _latest_process_jobs(s: Session, pipeline_id: str, doc_ids: set[str]) -> dict[str, Any]:
    """The latest ``process_document`` job of each of ``doc_ids`` in the pipeline (a job of one
    document names it in ``document_id``; a group's are in its payload)."""
    if not doc_ids:
        return {}
    rows = s.execute(
        select(Job.status, Job.last_error, Job.error_kind, Job.document_id, Job.payload)
        .where(Job.pipeline_id == pipeline_id, Job.type == PROCESS_JOB)
        .order_by(Job.created_at, Job.id)
    ).all()
    latest: dict[str, Any] = {}
    for row in rows:
        ids = [row.document_id] if row.document_id else list((row.payload or {}).get("document_ids") or [])
        for doc_id in ids:
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
        .where(Pipeline.kb_id == kb_id, Pipeline.status.not_in(FINAL_PIPELINE))
    ).scalar_one()
    if busy:
        return
    indexed = s.execute(
        select(func.count())
        .select_from(Document)
        .where(Document.kb_id == kb_id, Document.status == "indexed")
    ).scalar_one()
    if indexed:
        kb.status, kb.processed_at, kb.error = "ready", now, None
    else:
        kb.status, kb.error = "failed", "no document could be indexed"


def sweep(runtime: Runtime) -> None:
    """Settle every unfinished pipeline whose jobs have all ended (after crashes, for instance)."""
    with runtime.db.read_session() as s:
        ids = (
            s.execute(select(Pipeline.id).where(Pipeline.status.in_(("queued", "running", "cancelling"))))
            .scalars()
            .all()
        )
    for pid in ids:
        settle(runtime, pid)


# -- reads ------------------------------------------------------------------------------------

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
    if p.status not in FINAL_PIPELINE and p.started_at and 0 < p.progress < 100:
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
        "eta_seconds": eta,
    }


def _changed(s: Session, row: Pipeline, kind: str = events.PIPELINE) -> dict[str, Any]:
    """A status change: recorded in the pipeline's event log (this transaction); returns the live
    notice to publish once it has committed."""
    events.record(s, row.id, [(kind, to_dict(row))])
    return pipeline_state(row)


def _load(s: Session, p: Principal, pipeline_id: str) -> Pipeline:
    row = s.execute(
        select(Pipeline).where(Pipeline.id == pipeline_id, Pipeline.workspace_id == p.workspace_id)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"pipeline {pipeline_id} not found")
    return row


def get(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        return to_dict(_load(s, p, pipeline_id))


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
        if row.status in FINAL_PIPELINE and seen >= row.event_seq:
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
        if row.status in FINAL_PIPELINE:
            raise Conflict(f"pipeline is already {row.status}")
        row.status = "cancelling"
        s.execute(
            update(Job)
            .where(Job.pipeline_id == pipeline_id, Job.status == "pending")
            .values(status="cancelled", finished_at=utcnow(), last_error="cancelled by request")
        )
        event = _changed(s, row)
    publish_pipeline(runtime, pipeline_id, "status", event)
    settle(runtime, pipeline_id)
    return get(runtime, p, pipeline_id)


def pause(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    with runtime.db.session() as s:
        row = _load(s, p, pipeline_id)
        if row.status not in ("queued", "running"):
            raise Conflict(f"only a queued or running pipeline can be paused (it is {row.status})")
        row.status, row.message = "paused", "paused by request; finished work is kept"
        event = _changed(s, row)
    publish_pipeline(runtime, pipeline_id, "status", event)
    return get(runtime, p, pipeline_id)


def resume(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    with runtime.db.session() as s:
        row = _load(s, p, pipeline_id)
        if row.status != "paused":
            raise Conflict(f"only a paused pipeline can be resumed (it is {row.status})")
        row.status = "running"
        event = _changed(s, row)
    publish_pipeline(runtime, pipeline_id, "status", event)
    runtime.queue.notify()
    settle(runtime, pipeline_id)
    return get(runtime, p, pipeline_id)


def retry(runtime: Runtime, p: Principal, pipeline_id: str) -> dict[str, Any]:
    """Re-run the pipeline's failed documents (dead and failed jobs alike)."""
    from lorebase.services.documents import INTERACTIVE_PRIORITY, PROCESS_JOB

    with runtime.db.session() as s:
        row = _load(s, p, pipeline_id)
        if row.status not in FINAL_PIPELINE:
            raise Conflict(f"the pipeline is still {row.status}; retry once it has ended")
        failed = (
            s.execute(
                select(Document).where(
                    Document.pipeline_id == pipeline_id, Document.status.in_(("failed", "cancelled"))
                )
            )
            .scalars()
            .all()
        )
        if not failed:
            raise Conflict("the pipeline has no failed or cancelled documents to retry")
        for doc in failed:
            doc.status, doc.error, doc.error_kind = "pending", None, None
            runtime.queue.enqueue(
                s,
                type=PROCESS_JOB,
                workspace_id=row.workspace_id,
                pipeline_id=row.id,
                kb_id=row.kb_id,
                document_id=doc.id,
                payload={"document_id": doc.id},
                priority=INTERACTIVE_PRIORITY,
            )
        row.status, row.finished_at, row.error, row.progress = "running", None, None, 0
        kb = s.get(KnowledgeBase, row.kb_id)
        if kb is not None and kb.status == "failed":
            kb.status = "processing"
        events.record_documents(s, failed)
        event = _changed(s, row)
    publish_pipeline(runtime, pipeline_id, "status", event)
    runtime.queue.notify()
    return get(runtime, p, pipeline_id)
