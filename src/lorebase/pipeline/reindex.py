"""The ``reindex_version`` task's handler (``tasks/reindex_version.py``): chunk a KB's documents
for a config version being built, beside the live one.

Work is found, not remembered: each round takes a batch of the KB's documents with saved chunks that have
no chunks in the version yet, parses them from their stored originals (uploads, fetched pages
and text records alike: nothing is fetched again), chunks them with the version's config and
saves the chunks pending, in one fenced transaction that is progress; the version's
``embed_chunks`` job embeds them, through the embedding cache. So a re-run after a crash starts
where the last saved batch ended, and a document added to the KB meanwhile is found by a later
round (ingestion also chunks new documents for a building version itself:
``pipeline/versions.py``). A document the version's config cannot chunk is recorded on the
version (``failed_documents``) and skipped. Whether the version is complete, and what happens
then, is decided when its pipeline settles (``services/versions.py``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased

from lorebase.db.models import Chunk, Document, KbVersion, KnowledgeBase, Pipeline, utcnow
from lorebase.db.states import DocumentStatus, VersionStatus
from lorebase.errors import PermanentError
from lorebase.jobs.context import JobContext
from lorebase.pipeline import progress
from lorebase.pipeline.process import Prepared, ProcessDocument, save_chunks
from lorebase.runtime import Runtime
from lorebase.tasks import embed_chunks

#: documents parsed per round (and per saved transaction)
BATCH = 16


#: documents whose chunks are saved: a version must have them. One still before its save is
#: chunked for every version kept at the time of its save (``pipeline/process.py``).
SAVED = (DocumentStatus.INDEXED, DocumentStatus.EMBEDDING)


def missing_documents(kb_id: str, version: int, skip: list[str] | None = None) -> Any:
    """The KB's documents with saved chunks but none in ``version`` (a query; ``skip``: ids left
    out)."""
    mine = aliased(Chunk)
    q = select(Document).where(
        Document.kb_id == kb_id,
        Document.status.in_(SAVED),
        ~exists().where(mine.document_id == Document.id, mine.version == version),
    )
    if skip:
        q = q.where(Document.id.not_in(skip))
    return q


class ReindexVersion:
    def run(self, ctx: JobContext[Runtime]) -> None:
        runtime = ctx.runtime
        pipeline_id, version = ctx.job.payload["pipeline_id"], int(ctx.job.payload["version"])
        while True:
            ctx.check_control()
            with runtime.db.read_session() as s:
                found = _batch(s, pipeline_id, version)
            if found is None:
                return
            kb_id, config, docs = found
            work = [(d.id, d.blob_key, d.media_type, d.filename, d.title, {version: config}) for d in docs]
            hashes = {d.id: d.content_hash for d in docs}
            outcomes = ProcessDocument.prepare(runtime, work)
            ctx.check_control()
            with ctx.transaction(progress=True) as s:
                s.execute(
                    select(KnowledgeBase.id).where(KnowledgeBase.id == kb_id).with_for_update(read=True)
                )
                row = s.execute(
                    select(KbVersion).where(KbVersion.kb_id == kb_id, KbVersion.version == version)
                ).scalar_one_or_none()
                if row is None or row.status != VersionStatus.BUILDING:
                    return  # cancelled, failed or deleted meanwhile: nothing more to build
                _save(s, runtime, ctx, row, outcomes, hashes)
            runtime.queue.notify()

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        """The version's build gave up: say why on the version (its pipeline then ends ``failed``
        and the version with it, ``services/reindex.py``); the live version is untouched."""
        pipeline_id = ctx.job.payload["pipeline_id"]
        session.execute(
            update(KbVersion)
            .where(KbVersion.pipeline_id == pipeline_id, KbVersion.status == VersionStatus.BUILDING)
            .values(message=f"re-index failed ({kind}): {message}")
        )


def _batch(s: Session, pipeline_id: str, version: int) -> tuple[str, dict[str, Any], list[Any]] | None:
    """(kb id, the version's config, a batch of documents to chunk), or None when none is left
    or the version is no longer building."""
    kb_id = s.execute(select(Pipeline.kb_id).where(Pipeline.id == pipeline_id)).scalar()
    if kb_id is None:
        raise PermanentError("the knowledge base was deleted")
    row = s.execute(
        select(KbVersion).where(KbVersion.kb_id == kb_id, KbVersion.version == version)
    ).scalar_one_or_none()
    if row is None or row.status != VersionStatus.BUILDING:
        return None
    skip = [d["id"] for d in row.failed_documents or []]
    docs = list(
        s.execute(missing_documents(kb_id, version, skip).order_by(Document.id).limit(BATCH)).scalars()
    )
    return (kb_id, row.config, docs) if docs else None


def _save(
    s: Session,
    runtime: Runtime,
    ctx: JobContext[Runtime],
    row: KbVersion,
    outcomes: list[Prepared | PermanentError],
    hashes: dict[str, str | None],
) -> None:
    """Save a round's chunks: only for documents still indexed, unchanged since they were read,
    and still without chunks in the version (ingestion may have chunked them meanwhile)."""
    pipeline_id = ctx.job.payload["pipeline_id"]
    ids = [o.doc_id for o in outcomes if isinstance(o, Prepared)]
    current = {
        d.id: d
        for d in s.execute(missing_documents(row.kb_id, row.version).where(Document.id.in_(ids))).scalars()
        if d.content_hash == hashes.get(d.id)
    }
    kb = s.get(KnowledgeBase, row.kb_id)
    assert kb is not None
    items = [(current[o.doc_id], kb, o) for o in outcomes if isinstance(o, Prepared) and o.doc_id in current]
    failed = [
        {"id": doc_id, "error": o.message}
        for (doc_id, o) in zip(hashes, outcomes, strict=True)
        if isinstance(o, PermanentError)
    ]
    if failed:
        row.failed_documents = [*(row.failed_documents or []), *failed]
    save_chunks(s, runtime, items, reindex_pipeline=pipeline_id)
    s.execute(
        update(Pipeline)
        .where(Pipeline.id == pipeline_id)
        .values(
            documents_done=Pipeline.documents_done + len(items) + len(failed),
            documents_failed=Pipeline.documents_failed + len(failed),
            updated_at=utcnow(),
        )
    )
    if items:
        embed_chunks.enqueue(
            s,
            runtime,
            workspace_id=row.workspace_id,
            pipeline_id=pipeline_id,
            kb_id=row.kb_id,
            version=row.version,
        )
    progress.refresh_progress(s, pipeline_id)
