"""Chroma store: cosine vectors in a local Chroma directory, keywords ranked by BM25 computed here.

One collection per dimension (``lorebase_chunks_{N}``, ``hnsw:space: cosine``); a record's id
is the chunk pk as a string, its metadata the KB id and the pk. Chroma gets vectors from us and
has no embedding function: it never loads or downloads a model. Telemetry is off.

Keywords: Chroma's local API only *filters* documents (``where_document`` ``$contains``, a literal
substring), it has no ranked text search (its sparse-vector Search API is for distributed and
hosted Chroma only). So a record's document is not the chunk's text but its terms — ``\\w+``
words, lower-cased, diacritics stripped, Snowball-stemmed (the PostgreSQL ``english`` stemmer) —
space-separated with a space on either side, in three ``|``-separated fields (content, title,
section). ``$contains " term "`` then matches whole terms only, and a query fetches every record
of its KB holding any of its terms and ranks them here by BM25: IDF over the KB (the KB's count
and the candidates' document frequencies), fields weighted as in the SQLite store (content 1.0,
title 0.5, section 0.3), lengths normalised against a fixed average, ``AVG_LENGTH``. A query
costs one read of its candidates plus one of the KB's ids; a very common term reads most of
the KB. Stop words (the SQLite store's list) are dropped from queries unless nothing else is left.

Consistency: Chroma cannot join the caller's SQL transaction, so every method ignores
``session`` and takes effect when called, whether that transaction later commits or not. Writes
are at-least-once and idempotent by pk: an upsert replaces the record of its pk, a delete of an
unknown pk does nothing, so a retried job re-writes the same state. The embed job
(``pipeline/index.py``) upserts *before* it commits the chunks as embedded: a crash or rollback
after the upsert leaves records whose chunks are still pending (searchable already); the job's
retry embeds those chunks again and re-upserts the same pks. Deletes (stale chunks, removed
documents, a deleted KB) also run before their commit: if that transaction rolls back, the
records are gone while their chunk rows stay marked embedded, and nothing re-indexes them until
the delete is retried or the document reprocessed. The directory belongs to one process at a time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.config import Settings
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
_FIELD_SEP = "|"  # never inside a term: terms are \w+
#: ids per query when ``allowed`` names many (SQLite, under Chroma, binds at most 32766 variables)
_IDS_PER_QUERY = 20_000


class ChromaStore:
    """Records are keyed by the chunk pk alone (pks are unique across KBs): an upsert of a pk replaces
    its record whatever KB held it, while ``delete`` only removes pks of the named KB."""

    name = "chroma"

    def __init__(self, dimensions: int, *, path: str | Path) -> None:
        self.dimensions = dimensions
        self.collection_name = f"lorebase_chunks_{dimensions}"
        self.client = chromadb.PersistentClient(
            path=str(path), settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        self._collection: Any = None

    def close(self) -> None:
        """Release the client (Chroma's SQLite files stay locked while any client of them is open)."""
        self.client.close()  # type: ignore[attr-defined]  # on the client, not in its ClientAPI type

    @property
    def collection(self) -> Any:
        """The collection, created on first use if ``ensure_schema`` has not run in this process."""
        if self._collection is None:
            self._collection = self.client.get_or_create_collection(
                self.collection_name,
                embedding_function=None,  # vectors come from lorebase's embedder: no model download
                metadata={"hnsw:space": "cosine"},
            )
        return self._collection

    # -- schema -------------------------------------------------------------------------------------
    def ensure_schema(self, session: Session) -> None:
        self._collection = None  # get or create it again: another client may have deleted it
        _ = self.collection

    # -- writes -------------------------------------------------------------------------------------
    def upsert(self, session: Session, entries: Sequence[IndexEntry]) -> None:
        entries = list({e.pk: e for e in entries}.values())  # the last entry for a pk wins
        batch = self.client.get_max_batch_size()
        for i in range(0, len(entries), batch):
            part = entries[i : i + batch]
            self.collection.upsert(
                ids=[str(e.pk) for e in part],
                embeddings=[np.asarray(e.vector, dtype=np.float32) for e in part],
                metadatas=[{"kb_id": e.kb_id, "pk": int(e.pk)} for e in part],
                documents=[_document(e) for e in part],
            )

    def delete(self, session: Session, kb_id: str, pks: Sequence[int]) -> None:
        batch = self.client.get_max_batch_size()
        for i in range(0, len(pks), batch):
            self.collection.delete(ids=[str(int(p)) for p in pks[i : i + batch]], where={"kb_id": kb_id})

    def delete_kb(self, session: Session, kb_id: str) -> None:
        self.collection.delete(where={"kb_id": kb_id})

    # -- reads --------------------------------------------------------------------------------------
    def vector_search(
        self, session: Session, kb_id: str, vector: np.ndarray, k: int, where: Where | None = None
    ) -> list[Hit]:
        allowed = None if where is None else where.pks(session, kb_id).tolist()  # by SQL, then the ids
        if (allowed is not None and not allowed) or k <= 0 or not np.any(vector):
            return []  # nothing allowed, nothing asked, or a zero vector (no direction to compare)
        query = np.asarray(vector, dtype=np.float32)
        if allowed is None:
            return self._nearest(kb_id, query, k, None)
        # Chroma binds each id as one SQLite variable: a long list is asked in parts, whose
        # nearest k together hold the nearest k of the whole list
        ids = [str(int(p)) for p in dict.fromkeys(allowed)]
        hits = [
            h
            for i in range(0, len(ids), _IDS_PER_QUERY)
            for h in self._nearest(kb_id, query, k, ids[i : i + _IDS_PER_QUERY])
        ]
        return sorted(hits, key=lambda h: (-h.score, h.pk))[: int(k)]

    def _nearest(self, kb_id: str, query: np.ndarray, k: int, ids: list[str] | None) -> list[Hit]:
        result = self.collection.query(
            query_embeddings=[query], n_results=int(k), where={"kb_id": kb_id}, ids=ids, include=["distances"]
        )
        found, distances = result["ids"][0], (result["distances"] or [[]])[0]
        return [Hit(pk=int(i), score=1.0 - float(d)) for i, d in zip(found, distances, strict=True)]

    def keyword_search(
        self, session: Session, kb_id: str, query: str, k: int, where: Where | None = None
    ) -> list[Hit]:
        allowed = None if where is None else where.pks(session, kb_id).tolist()  # by SQL, then the ids
        terms = query_terms(query)
        if not terms or k <= 0 or (allowed is not None and not allowed):
            return []
        contains = [{"$contains": f" {t} "} for t in terms]
        found = self.collection.get(
            where={"kb_id": kb_id},
            where_document=contains[0] if len(contains) == 1 else {"$or": contains},
            include=["documents"],
        )
        candidates = {
            int(i): _frequencies(doc) for i, doc in zip(found["ids"], found["documents"], strict=True)
        }
        if not candidates:
            return []
        scores = bm25(candidates, terms, self.count(session, kb_id))
        if allowed is not None:  # after the statistics: IDF is the KB's, whatever the filter
            keep = {int(p) for p in allowed}
            scores = {pk: score for pk, score in scores.items() if pk in keep}
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: int(k)]
        return [Hit(pk=pk, score=score) for pk, score in ranked]

    def count(self, session: Session, kb_id: str) -> int:
        return len(self.collection.get(where={"kb_id": kb_id}, include=[])["ids"])


# -- terms and BM25 ---------------------------------------------------------------------------------
def _document(e: IndexEntry) -> str:
    """The record's document: its fields' terms, `` a b | c | d `` (see the module docstring)."""
    fields = (" ".join(analyze(text)) for text in (e.text, e.title, e.section))
    return " " + f" {_FIELD_SEP} ".join(fields) + " "


def _frequencies(document: str) -> tuple[dict[str, float], int]:
    """A document's field-weighted term frequencies and its length in terms."""
    weighted: defaultdict[str, float] = defaultdict(float)
    length = 0
    for field, weight in zip(document.split(_FIELD_SEP), FIELD_WEIGHTS, strict=False):
        terms = field.split()
        length += len(terms)
        for term in terms:
            weighted[term] += weight
    return dict(weighted), length


def bm25(
    candidates: dict[int, tuple[dict[str, float], int]], terms: Sequence[str], total: int
) -> dict[int, float]:
    """BM25 (Lucene's IDF, never negative) of each candidate holding at least one of ``terms``.

    ``candidates`` must be every document of the corpus holding any of the terms (their
    document frequencies are counted among them), ``total`` the corpus size."""
    total = max(total, len(candidates))
    idf = {}
    for term in terms:
        df = sum(1 for freqs, _ in candidates.values() if term in freqs)
        idf[term] = math.log(1 + (total - df + 0.5) / (df + 0.5))
    scores: dict[int, float] = {}
    for pk, (freqs, length) in candidates.items():
        norm = K1 * (1 - B + B * length / AVG_LENGTH)
        score = sum(idf[t] * tf * (K1 + 1) / (tf + norm) for t in terms if (tf := freqs.get(t, 0.0)) > 0)
        if score > 0:
            scores[pk] = score
    return scores
