"""Vector + keyword store contract.

A store indexes chunks by their integer ``pk`` (the ``chunks.pk`` column) within a KB and
answers nearest-neighbour and keyword (BM25) queries. Writes take the caller's SQLAlchemy
session so that, for stores living in the same database, chunk rows, vectors and keyword
entries commit (or roll back) together: a crash can never leave a vector without its chunk.

Duplicate policy: ``upsert`` replaces an existing entry with the same pk (idempotent re-runs).
Scoping: every query names its ``kb_id``; a store never returns another KB's entries.
Filters: ``where`` (when not None) restricts results to the chunks whose document matches it
(``filters.py`` says what matches; each store applies it its own way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from sqlalchemy.orm import Session

from lorebase.adapters.stores.filters import Where


@dataclass(slots=True)
class IndexEntry:
    pk: int
    kb_id: str
    vector: np.ndarray
    text: str
    title: str = ""
    section: str = ""


@dataclass(slots=True)
class Hit:
    pk: int
    score: float


@runtime_checkable
class Store(Protocol):
    name: str

    def ensure_schema(self, session: Session) -> None:
        """Create the store's own tables/indexes if missing (idempotent)."""
        ...

    def upsert(self, session: Session, entries: Sequence[IndexEntry]) -> None:
        """Index entries; an existing pk is replaced."""
        ...

    def delete(self, session: Session, kb_id: str, pks: Sequence[int]) -> None:
        """Remove entries; unknown pks are ignored."""
        ...

    def delete_kb(self, session: Session, kb_id: str) -> None:
        """Remove every entry of a KB."""
        ...

    def vector_search(
        self, session: Session, kb_id: str, vector: np.ndarray, k: int, where: Where | None = None
    ) -> list[Hit]:
        """Nearest entries by cosine similarity, best first; ``score`` is the similarity (higher is better)."""
        ...

    def keyword_search(
        self, session: Session, kb_id: str, query: str, k: int, where: Where | None = None
    ) -> list[Hit]:
        """Best BM25 matches for any of the query's terms, best first; ``score`` higher is better."""
        ...

    def count(self, session: Session, kb_id: str) -> int:
        """How many entries the KB has in the vector index."""
        ...
