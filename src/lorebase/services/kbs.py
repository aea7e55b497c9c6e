"""Knowledge bases and their documents: read, extend, delete. Every query is workspace-scoped."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from lorebase.db.models import (
    Chunk,
    CrawlPage,
    Document,
    Evaluation,
    Job,
    KbVersion,
    KnowledgeBase,
    Pipeline,
    QueryLog,
    Source,
    index_key,
)
from lorebase.db.states import DocumentStatus
from lorebase.errors import InvalidInput, NotFound
from lorebase.pipeline import versions
from lorebase.pipeline.documents import SourceItem
from lorebase.services import quotas
from lorebase.services.auth import Principal
from lorebase.services.documents import (
    FileData,
    FileTuple,
    check_unique_external_ids,
    describe_file,
    describe_text_record,
    save_file,
    start_pipeline,
)
from lorebase.services.pipelines import scheduled_start
from lorebase.services.settle import settle

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

DOC_STATUSES = tuple(DocumentStatus)


def load(s: Session, p: Principal, kb_id: str, *, lock: bool = False) -> KnowledgeBase:
    """The workspace's KB (404 otherwise); ``lock``: its row locked for update (PostgreSQL), as
    version changes take it (``services/versions.py``)."""
    q = select(KnowledgeBase).where(KnowledgeBase.id == kb_id, KnowledgeBase.workspace_id == p.workspace_id)
    kb = s.execute(q.with_for_update() if lock else q).scalar_one_or_none()
    if kb is None:
        raise NotFound(f"knowledge base {kb_id} not found")
    return kb


def find_by_name(runtime: Runtime, p: Principal, name_or_id: str) -> dict[str, Any] | None:
    """Resolve a CLI ``--kb`` argument: an id, or a name (the newest KB of that name)."""
    with runtime.db.read_session() as s:
        kb = s.execute(
            select(KnowledgeBase)
            .where(KnowledgeBase.workspace_id == p.workspace_id)
            .where((KnowledgeBase.id == name_or_id) | (KnowledgeBase.name == name_or_id))
            .order_by(KnowledgeBase.created_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        return to_dict(s, kb) if kb else None


def to_dict(s: Session, kb: KnowledgeBase) -> dict[str, Any]:
    by_status = dict(
        s.execute(
            select(Document.status, func.count()).where(Document.kb_id == kb.id).group_by(Document.status)
        ).all()
    )
    chunks = s.execute(
        select(func.count())
        .select_from(Chunk)
        .where(Chunk.kb_id == kb.id, Chunk.version == kb.version, Chunk.embedded.is_(True))
    ).scalar_one()
    latest = s.execute(
        select(Pipeline.id).where(Pipeline.kb_id == kb.id).order_by(Pipeline.created_at.desc()).limit(1)
    ).scalar()
    return {
        "id": kb.id,
        "name": kb.name,
        "description": kb.description,
        "config": kb.config,
        "version": kb.version,
        "status": kb.status,
        "error": kb.error,
        "created_at": kb.created_at,
        "updated_at": kb.updated_at,
        "processed_at": kb.processed_at,
        "latest_pipeline_id": latest,
        "counts": {
            "documents": sum(by_status.values()),
            "indexed": by_status.get("indexed", 0),
            "failed": by_status.get("failed", 0),
            "chunks": chunks,
        },
    }


def list_kbs(runtime: Runtime, p: Principal, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        q = select(KnowledgeBase).where(KnowledgeBase.workspace_id == p.workspace_id)
        total = s.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = (
            s.execute(q.order_by(KnowledgeBase.created_at.desc()).limit(limit).offset(offset)).scalars().all()
        )
        return {"items": [to_dict(s, kb) for kb in rows], "total": total}


def get(runtime: Runtime, p: Principal, kb_id: str) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        return to_dict(s, load(s, p, kb_id))


def delete_kb(runtime: Runtime, p: Principal, kb_id: str) -> None:
    """Deletes the KB, its documents, chunks, index entries, pipelines, jobs and query logs."""
    with runtime.db.session() as s:
        kb = load(s, p, kb_id)
        kept = set(s.execute(select(Chunk.version).where(Chunk.kb_id == kb.id).distinct()).scalars())
        for version, config in versions.configs(s, kb, kept | {kb.version}).items():
            runtime.kb_store(config).delete_kb(s, index_key(kb.id, version))
        s.execute(delete(Job).where(Job.kb_id == kb.id))
        for model in (Chunk, Document, Pipeline, QueryLog, CrawlPage, Source, KbVersion, Evaluation):
            s.execute(delete(model).where(model.kb_id == kb.id))
        s.delete(kb)


def add_documents(
    runtime: Runtime,
    p: Principal,
    kb_id: str,
    *,
    records: list[dict[str, Any]] | None = None,
    files: list[FileTuple] | None = None,
    external_ids: list[str | None] | None = None,
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """Every item is checked (size, type, the workspace quota) before any blob is stored;
    ``not_before``: the processing waits until then (``services.pipelines.scheduled_start``)."""
    not_before = scheduled_start(not_before)
    get(runtime, p, kb_id)  # 404 before storing anything
    items: list[SourceItem] = []
    contents: list[FileData] = []
    if records is not None:
        if not records:
            raise InvalidInput("documents must not be empty")
        for i, rec in enumerate(records):
            item, text = describe_text_record(rec, i)
            items.append(item)
            contents.append(text)
    elif files:
        ids = external_ids or [None] * len(files)
        for (name, ctype, d), x in zip(files, ids, strict=True):
            items.append(describe_file(runtime, d, name, ctype, external_id=x))
            contents.append(d)
    else:
        raise InvalidInput("send JSON {documents:[...]} or multipart files in the field 'files'")
    check_unique_external_ids(items)
    with runtime.db.read_session() as s:
        quotas.check_kb(runtime, s, load(s, p, kb_id), items)
    for item, content in zip(items, contents, strict=True):
        save_file(runtime, item, content)
    with runtime.db.session() as s:
        kb = load(s, p, kb_id)
        quotas.check_kb(runtime, s, kb, items)  # again: others may have added meanwhile
        pipeline, outcome = start_pipeline(s, runtime, kb, items, not_before=not_before)
        pipeline_id = pipeline.id
    runtime.queue.notify()
    settle(runtime, pipeline_id)  # a batch of unchanged records ends at once
    return {"pipeline_id": pipeline_id, "documents": outcome}


def document_to_dict(d: Document) -> dict[str, Any]:
    return {
        "id": d.id,
        "kb_id": d.kb_id,
        "external_id": d.external_id,
        "source_type": d.source_type,
        "source_url": d.source_url,
        "filename": d.filename,
        "media_type": d.media_type,
        "title": d.title,
        "status": d.status,
        "error": d.error,
        "error_kind": d.error_kind,
        "page_count": d.page_count,
        "chunk_count": d.chunk_count,
        "size_bytes": d.size_bytes,
        #: GET /api/v1/documents/{id}/original answers a link to it (410 once retention removed it)
        "has_original": d.blob_key is not None,
        "metadata": d.meta,
        "pipeline_id": d.pipeline_id,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "indexed_at": d.indexed_at,
    }


def list_documents(
    runtime: Runtime, p: Principal, kb_id: str, *, status: str | None, limit: int, offset: int
) -> dict[str, Any]:
    if status is not None and status not in DOC_STATUSES:
        raise InvalidInput(f"unknown status {status!r}; one of {', '.join(DOC_STATUSES)}")
    with runtime.db.read_session() as s:
        load(s, p, kb_id)
        q = select(Document).where(Document.kb_id == kb_id, Document.workspace_id == p.workspace_id)
        if status:
            q = q.where(Document.status == status)
        total = s.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = (
            s.execute(q.order_by(Document.created_at, Document.id).limit(limit).offset(offset))
            .scalars()
            .all()
        )
        return {"items": [document_to_dict(d) for d in rows], "total": total}


def _doc(s: Session, p: Principal, document_id: str) -> Document:
    d = s.execute(
        select(Document).where(Document.id == document_id, Document.workspace_id == p.workspace_id)
    ).scalar_one_or_none()
    if d is None:
        raise NotFound(f"document {document_id} not found")
    return d


def get_document(runtime: Runtime, p: Principal, document_id: str) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        return document_to_dict(_doc(s, p, document_id))


def chunk_to_dict(c: Chunk) -> dict[str, Any]:
    return {
        "id": c.id,
        "document_id": c.document_id,
        "chunk_index": c.chunk_index,
        "text": c.content,
        "token_count": c.token_count,
        "metadata": c.meta,
        "embedded": c.embedded,
    }


def list_chunks(
    runtime: Runtime, p: Principal, document_id: str, *, limit: int, offset: int
) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        _doc(s, p, document_id)
        live = select(KnowledgeBase.version).where(KnowledgeBase.id == Chunk.kb_id).scalar_subquery()
        q = select(Chunk).where(
            Chunk.document_id == document_id, Chunk.workspace_id == p.workspace_id, Chunk.version == live
        )
        total = s.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = s.execute(q.order_by(Chunk.chunk_index).limit(limit).offset(offset)).scalars().all()
        return {"items": [chunk_to_dict(c) for c in rows], "total": total}
