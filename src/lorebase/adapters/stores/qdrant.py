"""Qdrant store: dense cosine vectors and BM25 keywords as sparse vectors, outside the SQL database.

One collection per dimension (``lorebase_chunks_{N}``); a point's id is the chunk pk, its payload
the KB id (a tenant keyword index on a server). Each point holds two named vectors: ``dense``
(cosine) and ``bm25``, a sparse vector of the chunk's stemmed terms. The sparse vector's values
are the BM25 term-frequency part computed here (fields weighted as in the SQLite store: content
1.0, title 0.5, section 0.3; lengths normalised against a fixed average, ``AVG_LENGTH``) and the
collection applies the IDF part itself (``Modifier.IDF``, over the whole collection as FTS5 does
over its table), so a query of the query's terms, each weighted 1, is ranked by BM25 by Qdrant.
Terms are ``\\w+`` words, lower-cased, diacritics stripped, Snowball-stemmed (the PostgreSQL
``english`` stemmer), with the SQLite store's stop list applied to queries only; a term's index
in the sparse vector is a 32-bit hash of it (a rare collision makes two terms one).

Consistency: Qdrant cannot join the caller's SQL transaction, so every method ignores
``session`` and takes effect when called, whether that transaction later commits or not. Writes
are at-least-once and idempotent by pk: an upsert replaces the point of its pk, a delete of an
unknown pk does nothing, so a retried job re-writes the same state. The embed job
(``pipeline/index.py``) upserts *before* it commits the chunks as embedded: a crash or rollback
after the upsert leaves points whose chunks are still pending (searchable already); the job's
retry embeds those chunks again and re-upserts the same pks. Deletes (stale chunks, removed
documents, a deleted KB) also run before their commit: if that transaction rolls back, the
points are gone while their chunk rows stay marked embedded, and nothing re-indexes them until
the delete is retried or the document reprocessed.

``QdrantStore(n)`` keeps points in memory, ``path=`` in a local directory (one process at a time:
the client locks it), ``url=`` on a Qdrant server, the only mode for production use.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from sqlalchemy.orm import Session

from lorebase.adapters.stores.filters import Where
from lorebase.adapters.stores.protocol import Hit, IndexEntry
from lorebase.adapters.stores.terms import analyze, query_terms

#: BM25 term-frequency saturation and length normalisation (the usual defaults, as FTS5's)
K1 = 1.2
B = 0.75
#: document length (in terms) that BM25 normalises against: about a default chunk (200 words)
AVG_LENGTH = 200.0
#: weight of a term occurrence in content, title and section (the SQLite store's bm25 weights)
FIELD_WEIGHTS = (1.0, 0.5, 0.3)
DENSE = "dense"
SPARSE = "bm25"
_BATCH = 256


class QdrantStore:
    """Points are keyed by the chunk pk alone (pks are unique across KBs): an upsert of a pk replaces
    its point whatever KB held it, while ``delete`` only removes pks of the named KB."""

    name = "qdrant"

    def __init__(self, dimensions: int, *, path: str | Path | None = None, url: str | None = None) -> None:
        if path is not None and url is not None:
            raise ValueError("QdrantStore takes a local path or a server url, not both")
        self.dimensions = dimensions
        self.collection = f"lorebase_chunks_{dimensions}"
        self.local = url is None
        if url is not None:
            self.client = QdrantClient(url=url)
        else:
            self.client = QdrantClient(path=str(path)) if path is not None else QdrantClient(":memory:")
        # the local mode is plain Python state, not made for concurrent callers; a server is
        self._guard: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.local else contextlib.nullcontext()
        )

    def close(self) -> None:
        """Release the client (and a local directory's lock)."""
        self.client.close()

    # -- schema -------------------------------------------------------------------------------------
    def ensure_schema(self, session: Session) -> None:
        with self._guard:
            if not self.client.collection_exists(self.collection):
                try:
                    self.client.create_collection(
                        self.collection,
                        vectors_config={
                            DENSE: models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE)
                        },
                        sparse_vectors_config={
                            SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                        },
                    )
                except Exception:  # another process created it meanwhile
                    if not self.client.collection_exists(self.collection):
                        raise
            if not self.local:  # the local mode has no payload indexes (and warns about them)
                self.client.create_payload_index(
                    self.collection,
                    "kb_id",
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
                )

    # -- writes -------------------------------------------------------------------------------------
    def upsert(self, session: Session, entries: Sequence[IndexEntry]) -> None:
        entries = list({e.pk: e for e in entries}.values())  # the last entry for a pk wins
        for i in range(0, len(entries), _BATCH):
            points = [
                models.PointStruct(
                    id=int(e.pk),
                    vector={
                        DENSE: np.asarray(e.vector, dtype=np.float32).tolist(),
                        SPARSE: _document_vector(e),
                    },
                    payload={"kb_id": e.kb_id},
                )
                for e in entries[i : i + _BATCH]
            ]
            with self._guard:
                self.client.upsert(self.collection, points, wait=True)

    def delete(self, session: Session, kb_id: str, pks: Sequence[int]) -> None:
        if not pks:
            return
        with self._guard:
            self.client.delete(
                self.collection,
                models.FilterSelector(filter=_scope(kb_id, pks)),
                wait=True,
            )

    def delete_kb(self, session: Session, kb_id: str) -> None:
        with self._guard:
            self.client.delete(self.collection, models.FilterSelector(filter=_scope(kb_id)), wait=True)

    # -- reads --------------------------------------------------------------------------------------
    def vector_search(
        self, session: Session, kb_id: str, vector: np.ndarray, k: int, where: Where | None = None
    ) -> list[Hit]:
        allowed = None if where is None else where.pks(session, kb_id).tolist()  # by SQL, then the ids
        if (allowed is not None and not allowed) or k <= 0 or not np.any(vector):
            return []  # nothing allowed, nothing asked, or a zero vector (no direction to compare)
        with self._guard:
            points = self.client.query_points(
                self.collection,
                query=np.asarray(vector, dtype=np.float32).tolist(),
                using=DENSE,
                query_filter=_scope(kb_id, allowed),
                limit=int(k),
                with_payload=False,
            ).points
        return [Hit(pk=int(p.id), score=float(p.score)) for p in points]

    def keyword_search(
        self, session: Session, kb_id: str, query: str, k: int, where: Where | None = None
    ) -> list[Hit]:
        allowed = None if where is None else where.pks(session, kb_id).tolist()  # by SQL, then the ids
        terms = query_terms(query)
        if not terms or k <= 0 or (allowed is not None and not allowed):
            return []
        indices = list(dict.fromkeys(term_index(t) for t in terms))  # colliding terms count once
        sparse = models.SparseVector(indices=indices, values=[1.0] * len(indices))
        with self._guard:
            points = self.client.query_points(
                self.collection,
                query=sparse,
                using=SPARSE,
                query_filter=_scope(kb_id, allowed),
                limit=int(k),
                with_payload=False,
            ).points
        hits = [Hit(pk=int(p.id), score=float(p.score)) for p in points if p.score > 0]
        return sorted(hits, key=lambda h: (-h.score, h.pk))

    def count(self, session: Session, kb_id: str) -> int:
        with self._guard:
            return int(self.client.count(self.collection, count_filter=_scope(kb_id), exact=True).count)


# -- terms ------------------------------------------------------------------------------------------
def term_index(term: str) -> int:
    """A term's dimension in the sparse vector: a stable 32-bit hash (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")


def _document_vector(e: IndexEntry) -> models.SparseVector:
    """BM25's term-frequency factor of each term; Qdrant multiplies in the IDF at query time."""
    weighted: defaultdict[str, float] = defaultdict(float)
    length = 0
    for text, weight in zip((e.text, e.title, e.section), FIELD_WEIGHTS, strict=True):
        terms = analyze(text)
        length += len(terms)
        for term in terms:
            weighted[term] += weight
    norm = K1 * (1 - B + B * length / AVG_LENGTH)
    values: dict[int, float] = {}
    for term, tf in weighted.items():
        index = term_index(term)  # on a hash collision the two terms' frequencies add up
        values[index] = values.get(index, 0.0) + tf
    return models.SparseVector(
        indices=list(values), values=[tf * (K1 + 1) / (tf + norm) for tf in values.values()]
    )


def _scope(kb_id: str, pks: Sequence[int] | None = None) -> models.Filter:
    """Points of ``kb_id`` (and, when given, with one of ``pks``)."""
    must: list[models.Condition] = [models.FieldCondition(key="kb_id", match=models.MatchValue(value=kb_id))]
    if pks is not None:
        must.append(models.HasIdCondition(has_id=[int(p) for p in pks]))
    return models.Filter(must=must)
