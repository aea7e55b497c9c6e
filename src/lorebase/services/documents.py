"""Turning uploads and text records into source items, and starting the pipelines that ingest them.

Used by finalize (a new KB) and by ``POST /kbs/{id}/documents`` (an existing one) alike. The
documents themselves (upsert, grouping, removal) are ``pipeline/documents.py``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from lorebase.adapters.parsers.registry import detect_media_type
from lorebase.db.models import KnowledgeBase, Pipeline
from lorebase.errors import InvalidInput, PayloadTooLarge
from lorebase.pipeline.documents import SourceItem, add_items, new_pipeline, sanitize_filename

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

#: bytes of a spooled upload handed to type detection; a zip container (DOCX) is read whole,
#: because detection reads its central directory, at the end of the file
DETECT_HEAD_BYTES = 1024 * 1024

#: an upload's content: bytes in memory, or a file (a spooled upload, a file the CLI ingests)
FileData = bytes | Path
FileTuple = tuple[str | None, str | None, FileData]


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
    priority: int | None = None,
    not_before: datetime | None = None,
) -> tuple[Pipeline, list[dict[str, Any]]]:
    """Create a pipeline, upsert documents and enqueue their jobs, all in the caller's transaction.

    Returns the pipeline and, per item, ``{id, external_id, filename, status}`` where status is
    ``pending`` (will be processed) or ``skipped`` (unchanged).
    """
    check_unique_external_ids(items)
    pipeline = new_pipeline(session, kb, kind=kind, not_before=not_before)
    outcome = add_items(session, runtime, kb, pipeline, items, priority=priority)
    return pipeline, outcome
