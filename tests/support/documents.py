"""Document and chunk rows for a KB whose entries a test (or a benchmark) wrote to a store directly.

Metadata filters match a chunk's *document* (``adapters/stores/filters.py``), so a store test that
filters needs the rows the pipeline would have written: a workspace, the KB, its documents with
their metadata, and chunk rows naming their document (embedded, as after indexing). Inserted
with Core in batches: a benchmark writes 100k chunks this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, insert

from lorebase.db.engine import Database
from lorebase.db.models import Chunk, Document, KnowledgeBase, Workspace

BATCH = 5000


def describe(
    db: Database,
    docs: Mapping[str, tuple[Mapping[str, Any], Sequence[int]]],
    *,
    kb_id: str,
    workspace_id: str = "ws-test",
) -> None:
    """Write ``{document id: (its metadata, its chunks' pks)}`` for ``kb_id``; a document's
    filename is ``<id>.txt``. The workspace and the KB are made on first use."""
    doc_rows = [
        {
            "id": doc_id,
            "kb_id": kb_id,
            "workspace_id": workspace_id,
            "source_type": "text",
            "filename": f"{doc_id}.txt",
            "metadata": dict(meta),
        }
        for doc_id, (meta, _) in docs.items()
    ]
    chunk_rows = [
        {
            "pk": int(pk),
            "id": f"chunk-{pk}",
            "document_id": doc_id,
            "kb_id": kb_id,
            "workspace_id": workspace_id,
            "chunk_index": i,
            "content": "",
            "embed_text": "",
            "token_count": 0,
            "content_hash": "",
            "metadata": {},
            "embedded": True,
        }
        for doc_id, (_, pks) in docs.items()
        for i, pk in enumerate(pks)
    ]
    with db.session() as s:
        if s.get(Workspace, workspace_id) is None:
            s.add(Workspace(id=workspace_id, name=workspace_id))
            s.flush()
        if s.get(KnowledgeBase, kb_id) is None:
            s.add(KnowledgeBase(id=kb_id, workspace_id=workspace_id, name=kb_id))
            s.flush()
        for table, rows in ((Document, doc_rows), (Chunk, chunk_rows)):
            for lo in range(0, len(rows), BATCH):
                s.execute(insert(cast(Table, table.__table__)), rows[lo : lo + BATCH])
