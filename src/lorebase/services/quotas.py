"""Per-workspace quotas: how many documents, and how many bytes of uploaded files and text records,
one workspace may hold across all its knowledge bases (``settings.limits.workspace_max_documents``
and ``workspace_max_bytes``; 0 turns a quota off).

Checked before anything is stored, so a refused request leaves no documents and no blobs behind:

* adding files or text records to a draft: the workspace's documents + the draft's items + the new
  ones (a draft's items will all be new documents of a new KB);
* finalize: the workspace's documents + the draft's items, inside the finalize transaction;
* adding documents to a KB: the exact change, counting only documents that are new, and for a
  changed document only the difference in size (an unchanged re-upload adds nothing), once before
  the blobs are stored and again inside the transaction that creates the documents.

Beyond a quota the request fails with 413 (``PayloadTooLarge``, code ``workspace_quota``),
e.g. "workspace quota: 120 of 100 documents". Concurrent requests of one workspace may overshoot
a quota by what the others add between the check and their commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from lorebase.db.models import Document, KnowledgeBase
from lorebase.db.states import DOCUMENT_RETRYABLE
from lorebase.errors import PayloadTooLarge
from lorebase.pipeline.documents import SourceItem, existing_documents, item_key

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

#: document sources whose bytes count towards ``workspace_max_bytes`` (crawled pages do not)
COUNTED_BYTES = ("file", "text")
CODE = "workspace_quota"


def usage(session: Session, workspace_id: str) -> tuple[int, int]:
    """(documents, bytes of files and text records) the workspace holds now."""
    counted = case((Document.source_type.in_(COUNTED_BYTES), Document.size_bytes), else_=0)
    documents, nbytes = session.execute(
        select(func.count(), func.coalesce(func.sum(counted), 0)).where(Document.workspace_id == workspace_id)
    ).one()  # one pass over the workspace's documents
    return int(documents), int(nbytes or 0)


def check(runtime: Runtime, session: Session, workspace_id: str, *, documents: int, nbytes: int) -> None:
    """Raise 413 if adding ``documents`` documents and ``nbytes`` bytes exceeds a quota.

    Nothing added (or less) never fails, even for a workspace already over a (lowered) quota."""
    limits = runtime.settings.limits
    max_docs, max_bytes = limits.workspace_max_documents, limits.workspace_max_bytes
    if (documents <= 0 or not max_docs) and (nbytes <= 0 or not max_bytes):
        return
    held_docs, held_bytes = usage(session, workspace_id)
    if documents > 0 and max_docs and held_docs + documents > max_docs:
        raise PayloadTooLarge(
            f"workspace quota: {held_docs + documents} of {max_docs} documents "
            f"(the workspace holds {held_docs}, this request adds {documents})",
            code=CODE,
            details={"quota": "documents", "limit": max_docs, "held": held_docs, "adding": documents},
        )
    if nbytes > 0 and max_bytes and held_bytes + nbytes > max_bytes:
        raise PayloadTooLarge(
            f"workspace quota: {held_bytes + nbytes} of {max_bytes} bytes "
            f"({_human(held_bytes + nbytes)} of {_human(max_bytes)}; the workspace holds "
            f"{_human(held_bytes)}, this request adds {_human(nbytes)})",
            code=CODE,
            details={"quota": "bytes", "limit": max_bytes, "held": held_bytes, "adding": nbytes},
        )


def check_new(runtime: Runtime, workspace_id: str, items: list[SourceItem]) -> None:
    """All ``items`` become new documents (a draft's sources, a finalize)."""
    with runtime.db.read_session() as s:
        check_new_in(runtime, s, workspace_id, items)


def check_new_in(runtime: Runtime, session: Session, workspace_id: str, items: list[SourceItem]) -> None:
    check(
        runtime,
        session,
        workspace_id,
        documents=len(items),
        nbytes=sum(i.size_bytes for i in items if i.source_type in COUNTED_BYTES),
    )


def delta(session: Session, kb: KnowledgeBase, items: list[SourceItem]) -> tuple[int, int]:
    """(new documents, change in bytes) if ``items`` were added to ``kb`` now, by the upsert rule
    of ``documents.add_items``: unchanged → nothing, changed → size difference, else new."""
    existing = existing_documents(session, kb, items)
    documents = nbytes = 0
    for item in items:
        counted = item.size_bytes if item.source_type in COUNTED_BYTES else 0
        doc = existing.get(item_key(item))
        if doc is None:
            documents += 1
            nbytes += counted
        elif doc.content_hash != item.content_hash or doc.status in DOCUMENT_RETRYABLE:
            old = (doc.size_bytes or 0) if doc.source_type in COUNTED_BYTES else 0
            nbytes += counted - old
    return documents, nbytes


def check_kb(runtime: Runtime, session: Session, kb: KnowledgeBase, items: list[SourceItem]) -> None:
    documents, nbytes = delta(session, kb, items)
    check(runtime, session, kb.workspace_id, documents=documents, nbytes=nbytes)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover
