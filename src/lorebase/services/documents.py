"""Turning source items (uploaded files, text records) into documents and processing jobs.

Used by finalize (a new KB) and by ``POST /kbs/{id}/documents`` (an existing one) alike.
Upsert rule: a record whose ``external_id`` already exists in the KB with the same content is
``skipped`` (nothing re-embedded); changed content re-processes that document only, and its
unchanged chunks keep their ids and vectors.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from lorebase.adapters.parsers.registry import detect_media_type
from lorebase.db.models import Chunk, Document, Job, KnowledgeBase, Pipeline, new_id, utcnow
from lorebase.errors import InvalidInput, PayloadTooLarge
from lorebase.services import events

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

PROCESS_JOB = "process_document"
EMBED_JOB = "embed_chunks"
CRAWL_JOB = "crawl_source"
INTERACTIVE_PRIORITY = 10  # uploads and records from people outrank bulk work (crawls)
EMBED_PRIORITY = 20  # the embedder loop first: it is the bottleneck, keep it fed and busy
#: small documents are parsed in groups (one job each) so per-job costs do not starve the embedder
GROUP_MAX_DOCUMENTS = 16
GROUP_MAX_BYTES = 512 * 1024


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
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
#: Unicode categories replaced too: controls (C1 included), format characters (bidi overrides that
#: make ``evil\u202etxt.exe`` display as ``evilexe.txt``), lone surrogates, line/paragraph separators
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
MAX_FILENAME_CHARS = 255
#: bytes of a spooled upload handed to type detection; a zip container (DOCX) is read whole,
#: because detection reads its central directory, at the end of the file
DETECT_HEAD_BYTES = 1024 * 1024

#: an upload's content: bytes in memory, or a file (a spooled upload, a file the CLI ingests)
FileData = bytes | Path
FileTuple = tuple[str | None, str | None, FileData]


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


def _size_of(data: FileData) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


def _sha256_of(data: FileData) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _detection_bytes(data: FileData) -> bytes:
    if isinstance(data, bytes):
        return data
    with data.open("rb") as f:
        head = f.read(DETECT_HEAD_BYTES)
        if head.startswith(b"PK\x03\x04"):
            head += f.read()
    return head


def describe_file(
    runtime: Runtime,
    data: FileData,
    filename: str | None,
    declared: str | None,
    *,
    external_id: str | None = None,
) -> SourceItem:
    """The item an upload will become, checked (size, type) but not stored yet: its blob key is
    the SHA-256 of its bytes, exactly what the blob store will answer to ``put``."""
    limit = runtime.settings.max_upload_bytes
    size = _size_of(data)
    name = sanitize_filename(filename)
    if size > limit:
        raise PayloadTooLarge(
            f"{name!r} is {size} bytes: over the {limit} byte upload limit per file",
            details={"filename": name, "limit_bytes": limit},
        )
    media_type = detect_media_type(_detection_bytes(data), name, declared, limits=runtime.settings.parse)
    key = _sha256_of(data)
    return SourceItem(
        source_type="file",
        blob_key=key,
        media_type=media_type,
        content_hash=key,
        size_bytes=size,
        filename=name,
        title=None,
        external_id=external_id,
    )


def save_file(runtime: Runtime, item: SourceItem, data: FileData) -> SourceItem:
    """Put a described upload in the blob store (a file is copied through, not read whole)."""
    key = runtime.blobs.put(data) if isinstance(data, bytes) else runtime.blobs.put_file(data)
    item.blob_key = key
    return item


def describe_text_record(record: dict[str, Any], index: int) -> tuple[SourceItem, bytes]:
    """A text record's future item (blob key included) and its bytes, nothing stored yet."""
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"documents[{index}].text must be a non-empty string")
    title = record.get("title")
    external_id = record.get("external_id")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidInput(f"documents[{index}].metadata must be an object")
    data = text.encode("utf-8")
    digest = hashlib.sha256(f"{title or ''}\x00".encode() + data).hexdigest()
    item = SourceItem(
        source_type="text",
        blob_key=hashlib.sha256(data).hexdigest(),
        media_type="text/plain",
        content_hash=digest,
        size_bytes=len(data),
        title=str(title) if title is not None else None,
        external_id=str(external_id) if external_id is not None else None,
        metadata=metadata,
    )
    return item, data


def store_text_record(runtime: Runtime, record: dict[str, Any], index: int) -> SourceItem:
    item, data = describe_text_record(record, index)
    item.blob_key = runtime.blobs.put(data)
    return item


def check_unique_external_ids(items: list[SourceItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.external_id is None:
            continue
        if item.external_id in seen:
            raise InvalidInput(f"external_id {item.external_id!r} appears twice in one request")
        seen.add(item.external_id)


def start_pipeline(
    session: Session,
    runtime: Runtime,
    kb: KnowledgeBase,
    items: list[SourceItem],
    *,
    kind: str = "ingest",
    priority: int = INTERACTIVE_PRIORITY,
) -> tuple[Pipeline, list[dict[str, Any]]]:
    """Create a pipeline, upsert documents and enqueue their jobs, all in the caller's transaction.

    Returns the pipeline and, per item, ``{id, external_id, filename, status}`` where status is
    ``pending`` (will be processed) or ``skipped`` (unchanged).
    """
    check_unique_external_ids(items)
    pipeline = new_pipeline(session, kb, kind=kind)
    outcome = add_items(session, runtime, kb, pipeline, items, priority=priority)
    return pipeline, outcome


def new_pipeline(session: Session, kb: KnowledgeBase, *, kind: str) -> Pipeline:
    pipeline = Pipeline(
        id=new_id(), kb_id=kb.id, workspace_id=kb.workspace_id, kind=kind, created_at=utcnow()
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
    priority: int = INTERACTIVE_PRIORITY,
) -> list[dict[str, Any]]:
    """Upsert documents for ``items`` into a running pipeline and enqueue their processing jobs
    (the crawler calls this batch by batch as pages arrive)."""
    now = utcnow()
    existing = _existing(session, kb, items)
    new_rows: list[dict[str, Any]] = []
    to_process: list[tuple[str, int]] = []
    outcome: list[dict[str, Any]] = []
    for item in items:
        doc = existing.get(_key(item))
        if (
            doc is not None
            and doc.content_hash == item.content_hash
            and doc.status not in ("failed", "cancelled")
        ):
            if item.metadata and item.metadata != doc.meta:
                doc.meta = item.metadata
            outcome.append(_summary(doc.id, item, "skipped"))
            continue
        if doc is not None:  # changed (or failed before): re-process in place
            doc.blob_key, doc.media_type, doc.content_hash = item.blob_key, item.media_type, item.content_hash
            doc.size_bytes, doc.title, doc.pipeline_id = item.size_bytes, item.title, pipeline.id
            doc.status, doc.error, doc.error_kind = "pending", None, None
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
    if new_rows:
        session.execute(insert(Document), new_rows)
    jobs = [
        runtime.queue.job_row(
            type=PROCESS_JOB,
            workspace_id=kb.workspace_id,
            pipeline_id=pipeline.id,
            kb_id=kb.id,
            document_id=group[0] if len(group) == 1 else None,
            payload={"document_id": group[0]} if len(group) == 1 else {"document_ids": group},
            priority=priority,
        )
        for group in group_documents(to_process)
    ]
    if jobs:
        session.execute(insert(Job), jobs)
    if to_process and kb.status == "failed":  # new work can rescue a KB that had nothing indexed
        kb.status = "processing"
    return outcome


def group_documents(docs: list[tuple[str, int]]) -> list[list[str]]:
    """Consecutive documents in groups of at most GROUP_MAX_DOCUMENTS and GROUP_MAX_BYTES;
    a document over the byte cap gets a job of its own."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for doc_id, nbytes in docs:
        if current and (len(current) >= GROUP_MAX_DOCUMENTS or size + nbytes > GROUP_MAX_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(doc_id)
        size += nbytes
    if current:
        groups.append(current)
    return groups


def _key(item: SourceItem) -> tuple[str, str]:
    if item.external_id is not None:
        return ("ext", item.external_id)
    return ("file", f"{item.filename}\x00{item.content_hash}")


def _existing(
    session: Session, kb: KnowledgeBase, items: list[SourceItem]
) -> dict[tuple[str, str], Document]:
    ext_ids = [i.external_id for i in items if i.external_id is not None]
    hashes = [i.content_hash for i in items if i.external_id is None]
    found: dict[tuple[str, str], Document] = {}
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
        "meta": item.metadata or {},
        "created_at": now,
        "updated_at": now,
    }


def _summary(doc_id: str, item: SourceItem, status: str) -> dict[str, Any]:
    return {"id": doc_id, "external_id": item.external_id, "filename": item.filename, "status": status}


def fail_document(session: Session, document_id: str, message: str, kind: str) -> None:
    failed = session.execute(
        update(Document)
        .where(Document.id == document_id, Document.status.not_in(("indexed", "skipped", "cancelled")))
        .values(status="failed", error=message, error_kind=kind, updated_at=utcnow())
        .returning(*events.DOCUMENT_COLUMNS)
    ).all()
    events.record_documents(session, failed)


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
    doc.status, doc.error, doc.error_kind, doc.updated_at = "failed", message, kind, now
    session.flush()
    return doc.id


def remove_documents(session: Session, runtime: Runtime, kb: KnowledgeBase, document_ids: list[str]) -> int:
    """Take documents out of a KB: their vectors and keyword entries, chunks and rows."""
    if not document_ids:
        return 0
    pks = list(session.execute(select(Chunk.pk).where(Chunk.document_id.in_(document_ids))).scalars())
    if pks:
        runtime.kb_store(kb.config).delete(session, kb.id, pks)
        for i in range(0, len(pks), 500):
            session.execute(delete(Chunk).where(Chunk.pk.in_(pks[i : i + 500])))
    result = session.execute(delete(Document).where(Document.kb_id == kb.id, Document.id.in_(document_ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
