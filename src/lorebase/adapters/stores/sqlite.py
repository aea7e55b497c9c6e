"""sqlite-vec + FTS5 store, living in the same SQLite file as the metadata.

Vectors go to a ``vec0`` table per dimension, partitioned by KB so a KNN query only scans
its own KB. Keywords go to an FTS5 table (porter stemming, unicode61) ranked by BM25.
Both are written in the caller's transaction, with a change log (``change_log.py``) that lets
each process search a KB's vectors and keywords from memory, kept in step with the file
(``vector_cache.py``, exact; ``keyword_cache.py`` with ``fts5_rows.py``, FTS5's BM25 over the KB's own rows;
``cache_bytes`` / ``keyword_cache_bytes`` 0: every search asks ``vec0`` / FTS5).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from lorebase.adapters.stores.change_log import WHOLE_KB, ChangeLog
from lorebase.adapters.stores.filter_cache import FilterCache
from lorebase.adapters.stores.filters import Allowed, Where
from lorebase.adapters.stores.fts5_rows import Fts5Rows
from lorebase.adapters.stores.keyword_cache import KeywordCache
from lorebase.adapters.stores.protocol import Hit, IndexEntry
from lorebase.adapters.stores.terms import FTS5_TOKENIZER, STOP_WORDS
from lorebase.adapters.stores.vector_cache import VectorCache

_TOKEN = re.compile(r"\w+", re.UNICODE)


#: how keyword matches are ranked: BM25 with column weights content, title, section, kb_id
_RANK = "bm25(1.0, 0.5, 0.3, 0.0)"


def fts_query(query: str) -> str:
    """Turn free text into a safe FTS5 OR-query of quoted terms (no FTS syntax leaks through)."""
    terms: list[str] = []
    for t in _TOKEN.findall(query.lower()):
        if t in STOP_WORDS or t in terms:
            continue
        terms.append(t)
    if not terms:  # a query of stop words only: search them rather than nothing
        terms = list(dict.fromkeys(_TOKEN.findall(query.lower())))
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms[:64])


class SqliteStore:
    name = "sqlite"

    def __init__(
        self, dimensions: int, *, cache_bytes: int = 0, keyword_cache_bytes: int = 0, background: bool = False
    ) -> None:
        self.dimensions = dimensions
        self.vec_table = f"vec_chunks_{dimensions}"
        self.changes = ChangeLog(f"vec_changes_{dimensions}")
        # background: the in-memory indexes are built in threads while SQL answers (memory_index.py)
        self.cache = VectorCache(self.vec_table, self.changes, dimensions, cache_bytes, background=background)
        self.keywords = KeywordCache(self.changes, Fts5Rows(), keyword_cache_bytes, background=background)
        self.filters = FilterCache(self.changes, cache_bytes, background=background)

    def ensure_schema(self, session: Session) -> None:
        session.execute(
            text(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.vec_table} USING vec0("
                f"kb_id text partition key, embedding float[{self.dimensions}] distance_metric=cosine)"
            )
        )
        session.execute(
            text(
                "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5("
                f"content, title, section, kb_id UNINDEXED, tokenize='{FTS5_TOKENIZER}')"
            )
        )
        # the ranking keyword search orders by: FTS5 sorts by its own ``rank`` column faster than
        # by a bm25() call in ORDER BY (~25 % at 100k chunks, the same results; benchmarks/README)
        session.execute(text(f"INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('rank', '{_RANK}')"))
        for statement in self.changes.schema():  # the change log is written even where no cache reads it
            session.execute(text(statement))
        tables = set(session.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars())
        chunk_columns = set(session.execute(text("SELECT name FROM pragma_table_info('chunks')")).scalars())
        if "documents" in tables and "version" in chunk_columns:  # the app's schema (a bare store has none)
            # a document's filterable fields changing on their own (filter_cache.py): its chunks
            # go to the change log, in the same transaction
            watched = ("metadata", "external_id", "filename", "media_type", "source_type")
            changed = " OR ".join(f"old.{c} IS NOT new.{c}" for c in watched)
            # (under each version's index key, db.models.index_key; the first trigger knew one)
            session.execute(text(f"DROP TRIGGER IF EXISTS {self.changes.table}_documents"))
            session.execute(
                text(
                    f"CREATE TRIGGER IF NOT EXISTS {self.changes.table}_documents_v2 "
                    f"AFTER UPDATE OF {', '.join(watched)} ON documents WHEN {changed} BEGIN "
                    f"INSERT INTO {self.changes.table}(kb_id, pk) "
                    "SELECT CASE WHEN c.version = 1 THEN c.kb_id ELSE c.kb_id || '@v' || c.version END, c.pk "
                    "FROM chunks c WHERE c.document_id = new.id AND c.embedded; END"
                )
            )

    def upsert(self, session: Session, entries: Sequence[IndexEntry]) -> None:
        entries = list({e.pk: e for e in entries}.values())  # the last entry for a pk wins
        if not entries:
            return
        pks = [e.pk for e in entries]
        self._delete_pks(session, pks)
        session.execute(
            text(f"INSERT INTO {self.vec_table}(rowid, kb_id, embedding) VALUES (:pk, :kb, :v)"),
            [
                {"pk": e.pk, "kb": e.kb_id, "v": np.asarray(e.vector, dtype=np.float32).tobytes()}
                for e in entries
            ],
        )
        session.execute(
            text(
                "INSERT INTO chunks_fts(rowid, content, title, section, kb_id) VALUES (:pk, :c, :t, :s, :kb)"
            ),
            [{"pk": e.pk, "c": e.text, "t": e.title, "s": e.section, "kb": e.kb_id} for e in entries],
        )
        self.changes.record(session, [(e.kb_id, e.pk) for e in entries])

    def _delete_pks(self, session: Session, pks: Sequence[int]) -> None:
        for i in range(0, len(pks), 500):
            part = list(pks[i : i + 500])
            marks = ",".join(str(int(p)) for p in part)
            session.execute(text(f"DELETE FROM {self.vec_table} WHERE rowid IN ({marks})"))
            session.execute(text(f"DELETE FROM chunks_fts WHERE rowid IN ({marks})"))

    def delete(self, session: Session, kb_id: str, pks: Sequence[int]) -> None:
        self._delete_pks(session, pks)
        self.changes.record(session, [(kb_id, int(p)) for p in pks])

    def delete_kb(self, session: Session, kb_id: str) -> None:
        session.execute(text(f"DELETE FROM {self.vec_table} WHERE kb_id = :kb"), {"kb": kb_id})
        session.execute(text("DELETE FROM chunks_fts WHERE kb_id = :kb"), {"kb": kb_id})
        self.changes.record(session, [(kb_id, WHOLE_KB)])

    def _allowed(self, session: Session, kb_id: str, where: Where | None) -> Allowed | None:
        """What ``where`` allows: from memory when the KB is held there, else by SQL."""
        if where is None:
            return None
        if self.filters.max_bytes > 0:
            found = self.filters.allowed(session, kb_id, where)
            if found is not None:
                return found
        return where.pks(session, kb_id)

    def vector_search(
        self, session: Session, kb_id: str, vector: np.ndarray, k: int, where: Where | None = None
    ) -> list[Hit]:
        if k <= 0 or not np.any(vector):
            return []  # nothing asked, or a zero vector (no direction to compare)
        allowed = self._allowed(session, kb_id, where)
        if allowed is not None and not len(allowed):
            return []
        if self.cache.max_bytes > 0:
            found = self.cache.search(session, kb_id, vector, int(k), allowed)
            if found is not None:
                return [Hit(pk=pk, score=score) for pk, score in found]
        k = min(int(k), 4096)  # vec0 caps k at 4096
        only = _only(allowed)
        rows = session.execute(
            text(
                f"SELECT rowid, distance FROM {self.vec_table} "
                f"WHERE embedding MATCH :v AND kb_id = :kb AND k = :k{only} ORDER BY distance"
            ),
            {"v": np.asarray(vector, dtype=np.float32).tobytes(), "kb": kb_id, "k": k},
        ).all()
        return [Hit(pk=int(r[0]), score=1.0 - float(r[1])) for r in rows]

    def keyword_search(
        self, session: Session, kb_id: str, query: str, k: int, where: Where | None = None
    ) -> list[Hit]:
        if k <= 0:
            return []
        allowed = self._allowed(session, kb_id, where)
        if allowed is not None and not len(allowed):
            return []
        if self.keywords.max_bytes > 0:
            found = self.keywords.search(session, kb_id, query, int(k), allowed)
            if found is not None:
                return [Hit(pk=pk, score=score) for pk, score in found]
        match = fts_query(query)
        if not match:
            return []
        only = _only(allowed)
        # rank is bm25 (_RANK), lower-is-better
        rows = session.execute(
            text(
                "SELECT rowid, rank FROM chunks_fts "
                f"WHERE chunks_fts MATCH :q AND kb_id = :kb{only} ORDER BY rank LIMIT :k"
            ),
            {"q": match, "kb": kb_id, "k": int(k)},
        ).all()
        return [Hit(pk=int(r[0]), score=-float(r[1])) for r in rows]

    def count(self, session: Session, kb_id: str) -> int:
        return int(
            session.execute(
                text(f"SELECT count(*) FROM {self.vec_table} WHERE kb_id = :kb"), {"kb": kb_id}
            ).scalar()
            or 0
        )


def _only(allowed: Allowed | None) -> str:
    """The SQL path's filter: ``AND rowid IN (…)`` over the allowed pks (integers, inlined)."""
    if allowed is None:
        return ""
    return " AND rowid IN (" + ",".join(str(p) for p in allowed.tolist()) + ")"
