"""Documents of a knowledge base: the items that become them, their upsert into a pipeline, and
their removal.

Used by finalize and ``POST /kbs/{id}/documents`` (through ``services/documents.py``) and by the
crawler, batch by batch as pages arrive. Upsert rule: a record whose ``external_id`` already
exists in the KB with the same content is ``skipped`` (nothing re-embedded); changed content
re-processes that document only, and its unchanged chunks keep their ids and vectors.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from lorebase.db.models import Chunk, Document, KnowledgeBase, Pipeline, index_key, new_id, utcnow
from lorebase.db.states import DOCUMENT_RETRYABLE, DocumentStatus, transition
from lorebase.pipeline import versions
from lorebase.tasks import process_document

if TYPE_CHECKING:
    from lorebase.runtime import Runtime


@dataclass(slots=True)
class SourceItem:
    """One future document: its bytes are already in the blob store under ``blob_key``."""

    source_type: str
    blob_key: str
    media_type: str
    content_hash: str
    size_bytes: int
    filename: str | None = None
    title: str | None = None
    external_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source_id: str | None = None
    source_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceItem:
        known = _ITEM_FIELDS
        return cls(**{k: v for k, v in data.items() if k in known})


#: the fields ``from_json`` keeps (keys a newer or older build wrote are ignored)
_ITEM_FIELDS = frozenset(f.name for f in fields(SourceItem))

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
#: Unicode categories replaced too: controls (C1 included), format characters (bidi overrides that
#: make ``evil\u202etxt.exe`` display as ``evilexe.txt``), lone surrogates, line/paragraph separators
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
MAX_FILENAME_CHARS = 255


def sanitize_filename(name: str | None) -> str:
    """Keep only a display name: the last path component, no control, format or path characters,
    at most 255 characters (a long name keeps its extension). Never used as a path: blobs are
    stored under their SHA-256; this is metadata only."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[\\/]", name)[-1]
    name = "".join("_" if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in name)
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16 and " " not in ext:
            name = f"{stem[: MAX_FILENAME_CHARS - len(ext) - 1].rstrip(' .')}.{ext}"
        else:
            name = name[:MAX_FILENAME_CHARS].rstrip(" .")
    return name or "upload"


def new_pipeline(
    session: Session, kb: KnowledgeBase, *, kind: str, not_before: datetime | None = None
) -> Pipeline:
    """A ``queued`` pipeline. With ``not_before`` (a scheduled start, UTC) every job it queues
    waits until then (``JobQueue.placement`` sets their ``run_at``), and its message says when
    it starts; the first claim of one of its jobs makes it ``running``."""
    pipeline = Pipeline(
        id=new_id(),
        kb_id=kb.id,
        workspace_id=kb.workspace_id,
        kind=kind,
        created_at=utcnow(),
        not_before=not_before,
        message=f"scheduled: starts at {not_before.isoformat()}" if not_before is not None else None,
    )
    session.add(pipeline)
    session.flush()
    return pipeline


def add_items(
    session: Session,
    runtime: Runtime,
    kb: KnowledgeBase,
    pipeline: Pipeline,
    items: list[SourceItem],
    *,
    priority: int | None = None,
) -> list[dict[str, Any]]:
    """Upsert documents for ``items`` into a running pipeline and enqueue their processing jobs
    (the crawler calls this batch by batch as pages arrive, at its own bulk ``priority``)."""
    now = utcnow()
    existing = existing_documents(session, kb, items)
    new_rows: list[dict[str, Any]] = []
    to_process: list[tuple[str, int]] = []
    outcome: list[dict[str, Any]] = []
    for item in items:
        doc = existing.get(item_key(item))
        if doc is not None and doc.content_hash == item.content_hash and doc.status not in DOCUMENT_RETRYABLE:
            if item.metadata and item.metadata != doc.meta:
                doc.meta = item.metadata
            if doc.blob_key is None:  # retention dropped its original: the same bytes bring it back
                doc.blob_key, doc.original_removed_at = item.blob_key, None
            outcome.append(_summary(doc.id, item, "skipped"))
            continue
        if doc is not None:  # changed (or failed before): re-process in place
            doc.blob_key, doc.media_type, doc.content_hash = item.blob_key, item.media_type, item.content_hash
            doc.size_bytes, doc.title, doc.pipeline_id = item.size_bytes, item.title, pipeline.id
            doc.status, doc.error, doc.error_kind = DocumentStatus.PENDING, None, None
            if item.source_url:
                doc.source_url = item.source_url
            if item.metadata:
                doc.meta = item.metadata
            to_process.append((doc.id, item.size_bytes))
            outcome.append(_summary(doc.id, item, "pending"))
            continue
        doc_id = new_id()
        new_rows.append(_row(doc_id, kb, pipeline.id, item, now))
        to_process.append((doc_id, item.size_bytes))
        outcome.append(_summary(doc_id, item, "pending"))
    # added in SQL, not read-modify-write: on PostgreSQL several crawl jobs may add to one pipeline
    # at once (SQLite runs write transactions one at a time)
    pipeline.documents_total = Pipeline.documents_total + len(to_process)
    pipeline.documents_skipped = Pipeline.documents_skipped + (len(items) - len(to_process))
    session.flush()
    if new_rows:  # Core, not the ORM's bulk insert: same rows, a third of the Python time
        session.execute(insert(cast(Table, Document.__table__)), new_rows)
    process_document.enqueue(
        session,
        runtime,
        to_process,
        workspace_id=kb.workspace_id,
        pipeline_id=pipeline.id,
        kb_id=kb.id,
        priority=priority,
    )
    if to_process and kb.status == "failed":  # new work can rescue a KB that had nothing indexed
        kb.status = "processing"
    return outcome


def item_key(item: SourceItem) -> tuple[str, str]:
    if item.external_id is not None:
        return ("ext", item.external_id)
    return ("file", f"{item.filename}\x00{item.content_hash}")


def existing_documents(
    session: Session, kb: KnowledgeBase, items: list[SourceItem]
) -> dict[tuple[str, str], Document]:
    ext_ids = [i.external_id for i in items if i.external_id is not None]
    hashes = [i.content_hash for i in items if i.external_id is None]
    found: dict[tuple[str, str], Document] = {}
    if session.execute(select(Document.id).where(Document.kb_id == kb.id).limit(1)).first() is None:
        return found  # a new KB (every finalize): nothing to match, skip the look-ups
    for i in range(0, len(ext_ids), 500):
        q = select(Document).where(Document.kb_id == kb.id, Document.external_id.in_(ext_ids[i : i + 500]))
        for doc in session.execute(q).scalars():
            found[("ext", doc.external_id or "")] = doc
    for i in range(0, len(hashes), 500):
        q = select(Document).where(
            Document.kb_id == kb.id,
            Document.external_id.is_(None),
            Document.content_hash.in_(hashes[i : i + 500]),
        )
        for doc in session.execute(q).scalars():
            found[("file", f"{doc.filename}\x00{doc.content_hash}")] = doc
    return found


def _row(doc_id: str, kb: KnowledgeBase, pipeline_id: str, item: SourceItem, now: Any) -> dict[str, Any]:
    return {
        "id": doc_id,
        "kb_id": kb.id,
        "workspace_id": kb.workspace_id,
        "pipeline_id": pipeline_id,
        "source_id": item.source_id,
        "source_url": item.source_url,
        "external_id": item.external_id,
        "source_type": item.source_type,
        "filename": item.filename,
        "media_type": item.media_type,
        "blob_key": item.blob_key,
        "size_bytes": item.size_bytes,
        "title": item.title,
        "content_hash": item.content_hash,
        "status": "pending",
        "chunk_count": 0,
        "metadata": item.metadata or {},  # the column name (Core insert; the ORM attribute is `meta`)
        "created_at": now,
        "updated_at": now,
    }


def _summary(doc_id: str, item: SourceItem, status: str) -> dict[str, Any]:
    return {"id": doc_id, "external_id": item.external_id, "filename": item.filename, "status": status}


def fail_document(session: Session, document_id: str, message: str, kind: str) -> None:
    """Fail one document with ``message`` unless it already ended otherwise."""
    transition(
        session,
        [
            Document.id == document_id,
            Document.status.not_in(
                (DocumentStatus.INDEXED, DocumentStatus.SKIPPED, DocumentStatus.CANCELLED)
            ),
        ],
        DocumentStatus.FAILED,
        error=message,
        error_kind=kind,
    )


def record_failed_page(
    session: Session,
    kb: KnowledgeBase,
    pipeline: Pipeline,
    *,
    source_id: str,
    url: str,
    message: str,
    kind: str,
) -> str:
    """A web page that could not be fetched still gets its document, ``failed`` with the reason
    (an earlier good version of the page stays searchable until the page is gone for good)."""
    doc = session.execute(
        select(Document).where(Document.kb_id == kb.id, Document.external_id == url)
    ).scalar_one_or_none()
    now = utcnow()
    if doc is None:
        doc = Document(
            id=new_id(),
            kb_id=kb.id,
            workspace_id=kb.workspace_id,
            source_id=source_id,
            external_id=url,
            source_type="web",
            source_url=url,
            chunk_count=0,
            meta={},
            created_at=now,
        )
        session.add(doc)
        pipeline.documents_total = (pipeline.documents_total or 0) + 1
    elif doc.pipeline_id != pipeline.id:
        pipeline.documents_total = (pipeline.documents_total or 0) + 1
    doc.pipeline_id = pipeline.id
    doc.status, doc.error, doc.error_kind, doc.updated_at = DocumentStatus.FAILED, message, kind, now
    session.flush()
    return doc.id


def remove_documents(session: Session, runtime: Runtime, kb: KnowledgeBase, document_ids: list[str]) -> int:
    """Take documents out of a KB: their vectors and keyword entries, chunks and rows."""
    if not document_ids:
        return 0
    rows = session.execute(select(Chunk.pk, Chunk.version).where(Chunk.document_id.in_(document_ids))).all()
    by_version: dict[int, list[int]] = {}
    for pk, version in rows:
        by_version.setdefault(version, []).append(pk)
    for version, config in versions.configs(session, kb, by_version).items():
        runtime.kb_store(config).delete(session, index_key(kb.id, version), by_version[version])
    pks = [pk for pk, _ in rows]
    for i in range(0, len(pks), 500):
        session.execute(delete(Chunk).where(Chunk.pk.in_(pks[i : i + 500])))
    result = session.execute(delete(Document).where(Document.kb_id == kb.id, Document.id.in_(document_ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
