"""``process_document``: read → parse → chunk → save the chunks of one document, or of a group of
small ones (``pipeline/process.py``). Not resumable: an attempt either saves its documents'
chunks or nothing. A group that fails transiently is split into one job per document
(``retry.split_group``), so a poison document ends ``dead`` alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from lorebase.db.models import Job
from lorebase.jobs.registry import TaskSpec

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

NAME = "process_document"
#: uploads and records from people outrank bulk work (crawls: ``crawl_source.PRIORITY``)
PRIORITY = 10
#: small documents are parsed in groups (one job each) so per-job costs do not starve the embedder
GROUP_MAX_DOCUMENTS = 16
GROUP_MAX_BYTES = 512 * 1024

SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.pipeline.process:ProcessDocument",
    kind="process",
    priority=PRIORITY,
    summary="parse, chunk and save a document (or a group of small ones)",
)


def payload(document_ids: list[str]) -> dict[str, Any]:
    """``{"document_id": …}`` for one document, ``{"document_ids": […]}`` for a group."""
    return {"document_id": document_ids[0]} if len(document_ids) == 1 else {"document_ids": document_ids}


def document_ids(job_payload: dict[str, Any]) -> list[str]:
    """The documents a job's payload names (see :func:`payload`)."""
    ids = job_payload.get("document_ids")
    return list(ids) if ids else [job_payload["document_id"]]


def group(docs: list[tuple[str, int]]) -> list[list[str]]:
    """Consecutive documents (id, size in bytes) in groups of at most :data:`GROUP_MAX_DOCUMENTS`
    and :data:`GROUP_MAX_BYTES`; a document over the byte cap gets a job of its own."""
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


def enqueue(
    s: Session,
    runtime: Runtime,
    docs: list[tuple[str, int]],
    *,
    workspace_id: str,
    pipeline_id: str | None,
    kb_id: str | None,
    priority: int | None = None,
    grouped: bool = True,
) -> None:
    """Queue the processing of documents (id, size in bytes) in the caller's transaction, in
    groups (:func:`group`) or one job each, in one bulk insert."""
    groups = group(docs) if grouped else [[doc_id] for doc_id, _ in docs]
    rows = [
        runtime.queue.job_row(
            s,
            **SPEC.row_values(runtime.settings, payload=payload(ids), priority=priority),
            workspace_id=workspace_id,
            pipeline_id=pipeline_id,
            kb_id=kb_id,
            document_id=ids[0] if len(ids) == 1 else None,
        )
        for ids in groups
    ]
    if rows:
        s.execute(insert(Job), rows)
