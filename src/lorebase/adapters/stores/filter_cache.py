"""Metadata filters for the sqlite store, evaluated in memory: a KB's documents' filterable fields
and which of its chunks each document holds, kept in step with the SQLite file.

SQLite evaluates a metadata filter with ``json_extract`` on every document of the KB: ~40 ms per
100k documents here, before the allowed pks travel to the search as a list. The same filter over
a per-field look-up (value → documents) and one numpy gather (documents → chunks) takes well
under a millisecond whatever share of the KB it allows, and hands the vector and keyword indexes
an :class:`~lorebase.adapters.stores.filters.Allowed` bitmap.

**The SQLite file stays the truth.** Which chunks a KB has, and of which document, changes only
through the store's writes, which the store's change log records (``change_log.py``). A
document's fields can also change on their own (a re-submitted document with new metadata): a
trigger the store installs on ``documents`` (``SqliteStore.ensure_schema``) writes that
document's chunks to the same log, in the same transaction. So every search sees the filter as
of its snapshot (or newer), like the other in-memory indexes, and what those changes cost is
re-reading the rows named.

Building, the byte budget (shared with the vector index's setting, ``LOREBASE_VECTOR_CACHE_MB``)
and eviction are ``memory_index.py``'s; until a KB is built here (or when it does not fit) the
store asks SQL (:meth:`Where.pks`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lorebase.adapters.stores.change_log import Changes
from lorebase.adapters.stores.filters import DOC_FIELDS, Allowed, Value, Where, indexed_chunks, typed
from lorebase.adapters.stores.memory_index import PerKbIndex
from lorebase.db.models import Chunk, Document, split_index_key

#: bytes per chunk (pk, document) and per document (its fields and metadata as Python objects),
#: for the memory estimate before a build
BYTES_PER_CHUNK, BYTES_PER_DOCUMENT = 48, 600
#: filters whose answers are kept (per process, all KBs)
RECENT = 16


@dataclass
class _KbFilters:
    """One KB's chunks (``chunk_doc``: pk → document number) and documents' fields."""

    seq: Any  # the change-log position it is at
    doc_numbers: dict[str, int]  # document id -> number
    docs: list[dict[str, Any] | None]  # number -> {field: typed value}; None: gone
    ids: list[str]  # number -> document id
    chunk_doc: dict[int, int]
    #: derived, rebuilt when stale: sorted pks and their document numbers
    pks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    doc_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: derived, per field on first use: value -> document numbers
    lookups: dict[str, dict[Value, np.ndarray]] = field(default_factory=dict)
    stale: bool = True

    @property
    def nbytes(self) -> int:
        return len(self.chunk_doc) * BYTES_PER_CHUNK + len(self.docs) * BYTES_PER_DOCUMENT

    def refresh(self) -> None:
        if self.stale:
            items = sorted(self.chunk_doc.items())
            self.pks = np.fromiter((p for p, _ in items), dtype=np.int64, count=len(items))
            self.doc_of = np.fromiter((d for _, d in items), dtype=np.int64, count=len(items))
            self.stale = False

    def lookup(self, name: str) -> dict[Value, np.ndarray]:
        if name not in self.lookups:
            by_value: dict[Value, list[int]] = {}
            for number, fields in enumerate(self.docs):
                if fields is not None and (value := fields.get(name)) is not None:
                    by_value.setdefault(value, []).append(number)
            self.lookups[name] = {v: np.asarray(ns, dtype=np.int64) for v, ns in by_value.items()}
        return self.lookups[name]


def _fields(row: Any) -> dict[str, Any]:
    """A document row's filterable fields, typed as :class:`Where` compares them."""
    out: dict[str, Any] = {}
    for name in DOC_FIELDS:
        value = row.id if name == "document_id" else getattr(row, name)
        if value is not None:
            out[name] = ("s", str(value))
    for key, value in (row.meta or {}).items():
        if (t := typed(value)) is not None:
            out[f"metadata.{key}"] = t
    return out


_DOC_COLUMNS = (
    Document.id,
    Document.external_id,
    Document.source_type,
    Document.filename,
    Document.media_type,
    Document.meta,
)


class FilterCache(PerKbIndex[_KbFilters]):
    def __init__(self, changes: Changes, max_bytes: int, *, background: bool = False) -> None:
        super().__init__(changes, max_bytes, background=background)
        #: the last few answers, by (KB, filter): (the KB's change it was computed at, allowed)
        self._recent: OrderedDict[tuple[str, Where], tuple[Any, Allowed]] = OrderedDict()

    def allowed(self, session: Session, kb_id: str, where: Where) -> Allowed | None:
        """The KB's chunks that ``where`` allows; None when the KB is not held here (the caller
        asks SQL). A hybrid search asks twice with the same filter, and the same filters come back:
        the last :data:`RECENT` answers are kept while the KB does not change."""
        with self.searching(session, kb_id) as kb:
            if kb is None:
                return None
            known = self._recent.get((kb_id, where))
            if known is not None and known[0] == kb.seq:
                self._recent.move_to_end((kb_id, where))
                return known[1]
            kb.refresh()
            docs = np.ones(len(kb.docs), dtype=bool)
            for cond in where.conditions:
                lookup = kb.lookup(cond.field)
                hit = np.zeros(len(kb.docs), dtype=bool)
                for value in cond.values:
                    if (numbers := lookup.get(value)) is not None:
                        hit[numbers] = True
                docs &= hit
            allowed = Allowed(kb.pks[docs[kb.doc_of]])
            self._recent[(kb_id, where)] = (kb.seq, allowed)
            self._recent.move_to_end((kb_id, where))
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
            return allowed

    def forget_answers(self) -> None:
        """Drop the kept answers (benchmarks measure a filter computed afresh)."""
        with self._lock:
            self._recent.clear()

    # -- keeping in step with the file -------------------------------------------------------
    def _position(self, kb: _KbFilters) -> Any:
        return kb.seq

    def _nbytes(self, kb: _KbFilters) -> int:
        return kb.nbytes

    def _estimate(self, session: Session, kb_id: str) -> int:
        chunks = session.execute(select(func.count()).where(*indexed_chunks(kb_id))).scalar()
        docs = session.execute(
            select(func.count()).where(Document.kb_id == split_index_key(kb_id)[0])
        ).scalar()
        return int(chunks or 0) * BYTES_PER_CHUNK + int(docs or 0) * BYTES_PER_DOCUMENT

    def _build(self, session: Session, kb_id: str, head: Any) -> _KbFilters:
        kb = _KbFilters(seq=head, doc_numbers={}, docs=[], ids=[], chunk_doc={})
        for row in session.execute(select(*_DOC_COLUMNS).where(Document.kb_id == split_index_key(kb_id)[0])):
            kb.doc_numbers[row.id] = len(kb.docs)
            kb.docs.append(_fields(row))
            kb.ids.append(row.id)
        numbers = kb.doc_numbers
        for pk, document_id in session.execute(
            select(Chunk.pk, Chunk.document_id).where(*indexed_chunks(kb_id))
        ):
            if document_id in numbers:
                kb.chunk_doc[int(pk)] = numbers[document_id]
        return kb

    def _apply(self, session: Session, kb_id: str, kb: _KbFilters, head: Any) -> _KbFilters | None:
        pks = self.changes.since(session, kb_id, kb.seq, head)
        if pks is None:
            return None
        if pks:
            ordered = sorted(pks)
            now: dict[int, str] = {}
            for i in range(0, len(ordered), 500):
                part = ordered[i : i + 500]
                rows = session.execute(
                    select(Chunk.pk, Chunk.document_id).where(Chunk.pk.in_(part), *indexed_chunks(kb_id))
                )
                now.update((int(pk), doc_id) for pk, doc_id in rows)
            before = {kb.chunk_doc[p] for p in pks if p in kb.chunk_doc}
            touched = set(now.values()) | {kb.ids[n] for n in before}
            self._read_documents(session, kb_id, kb, sorted(touched))
            for p in pks:
                doc_id = now.get(p)
                if doc_id is None or doc_id not in kb.doc_numbers:
                    kb.chunk_doc.pop(p, None)
                else:
                    kb.chunk_doc[p] = kb.doc_numbers[doc_id]
            kb.stale = True
            kb.lookups.clear()
        kb.seq = head
        return kb

    @staticmethod
    def _read_documents(session: Session, kb_id: str, kb: _KbFilters, doc_ids: list[str]) -> None:
        """(Re)read these documents' fields; one that is gone keeps its number, empty."""
        seen: set[str] = set()
        for i in range(0, len(doc_ids), 500):
            for row in session.execute(
                select(*_DOC_COLUMNS).where(
                    Document.kb_id == split_index_key(kb_id)[0], Document.id.in_(doc_ids[i : i + 500])
                )
            ):
                seen.add(row.id)
                number = kb.doc_numbers.get(row.id)
                if number is None:
                    kb.doc_numbers[row.id] = len(kb.docs)
                    kb.docs.append(_fields(row))
                    kb.ids.append(row.id)
                else:
                    kb.docs[number] = _fields(row)
        for doc_id in doc_ids:
            if doc_id not in seen and (number := kb.doc_numbers.pop(doc_id, None)) is not None:
                kb.docs[number] = None
