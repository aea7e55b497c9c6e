"""pgvector (HNSW) + PostgreSQL full-text store, living in the same database as the metadata.

One table per dimension holds, per chunk pk, its KB, its vector (``vector(N)``, HNSW index with
``vector_cosine_ops``) and its keywords (a weighted ``tsvector``: content, title, section; GIN
index), so a chunk's vector and keywords are one row and are written in the caller's transaction.

Vector search asks the HNSW index first; when the index yields fewer than ``k`` rows of the KB
(HNSW filters *after* its candidate list, so a small KB in a large table can come back short)
the nearest rows are computed exactly instead. A metadata filter is part of the SQL (the
chunks' documents that match, ``filters.py``): HNSW with more candidates first, exactly when that
comes back short. Keyword
search turns free text into an OR of plain terms (``websearch_to_tsquery``, which never raises
on syntax). With ``keyword_cache_bytes`` (the runtime's stores) it is ranked by BM25 from a per-KB
inverted index in memory over the tsvector's lexemes (``keyword_cache.py``, ``tsvector_rows.py``),
kept in step with the table by a change log written in the same transactions
(``change_log.PgChangeLog``, correct when transactions commit out of order); a KB not indexed
yet, or over the budget, is ranked by ``ts_rank_cd`` (cover density, no IDF), normalised by
document length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, REAL, REGCONFIG, TSVECTOR
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from lorebase.adapters.stores.change_log import WHOLE_KB, PgChangeLog
from lorebase.adapters.stores.filters import Where
from lorebase.adapters.stores.keyword_cache import KeywordCache
from lorebase.adapters.stores.protocol import Hit, IndexEntry
from lorebase.adapters.stores.tsvector_rows import TsvectorRows

#: text search configuration: porter stemming and an English stop list, as the SQLite store
TEXT_CONFIG = "english"
#: ts_rank_cd weights for labels {D, C, B, A}: section (C) 0.3, title (B) 0.5, content (A) 1.0
_WEIGHTS = literal_column("'{0.0, 0.3, 0.5, 1.0}'::real[]", ARRAY(REAL))
#: ts_rank_cd normalisation: divide the rank by 1 + log(document length)
_NORMALIZATION = literal_column("1", Integer)
#: HNSW indexes ``vector`` columns of at most this many dimensions (larger ones search exactly)
HNSW_MAX_DIMENSIONS = 2000
#: hnsw.ef_search is capped at 1000 by pgvector
_EF_SEARCH_MAX = 1000
_EF_SEARCH_MIN = 100
#: candidates per wanted result: HNSW filters by KB *after* taking its candidates, so a margin
#: keeps rows of other KBs from making the answer short (and the search exact); it also lifts
#: recall@10 from about 0.93-0.97 (ef_search 40) to above 0.95 at 100k chunks (benchmarks/scale.py)
_EF_SEARCH_PER_RESULT = 4
#: ... and with a metadata filter, which also drops candidates after the index (pgvector 0.6 has
#: no iterative scan): more of them, and the exact search when they still come back short
_EF_SEARCH_PER_FILTERED = 16
#: serialises concurrent ensure_schema calls (CREATE EXTENSION/TABLE IF NOT EXISTS can race)
_SCHEMA_LOCK = 0x6C6F7265_62617365  # "lorebase"
_TOKEN = re.compile(r"\w+", re.UNICODE)


def query_terms(query: str) -> list[str]:
    """Free text → distinct lower-case word terms (at most 64); punctuation and syntax are dropped.

    Terms only hold word characters, so joined with ``" or "`` they are a websearch query of
    plain words: no quotes, no ``-`` negation. The word ``or`` itself (a stop word) is dropped.
    """
    terms = [t for t in dict.fromkeys(_TOKEN.findall(query.lower())) if t != "or"]
    return terms[:64]


class PgvectorStore:
    """Rows are keyed by the chunk pk alone (pks are unique across KBs): an upsert of a pk replaces
    its row whatever KB held it, while ``delete`` only removes pks of the named KB."""

    name = "pgvector"

    def __init__(self, dimensions: int, *, keyword_cache_bytes: int = 0, background: bool = False) -> None:
        self.dimensions = dimensions
        self.table_name = f"pgvector_chunks_{dimensions}"
        self.changes = PgChangeLog(f"pgvector_changes_{dimensions}")
        # background: indexes are built in threads while SQL answers (memory_index.py)
        self.keywords = KeywordCache(
            self.changes,
            TsvectorRows(self.table_name, TEXT_CONFIG, query_terms),
            keyword_cache_bytes,
            background=background,
        )
        indexes = [
            Index(f"ix_{self.table_name}_kb_id", "kb_id"),
            Index(f"ix_{self.table_name}_tsv", "tsv", postgresql_using="gin"),
        ]
        if dimensions <= HNSW_MAX_DIMENSIONS:
            indexes.append(
                Index(
                    f"ix_{self.table_name}_hnsw",
                    "embedding",
                    postgresql_using="hnsw",
                    postgresql_with={"m": 16, "ef_construction": 64},
                    postgresql_ops={"embedding": "vector_cosine_ops"},
                )
            )
        self.table = Table(
            self.table_name,
            MetaData(),
            Column("pk", BigInteger, primary_key=True, autoincrement=False),
            Column("kb_id", Text, nullable=False),
            Column("embedding", Vector(dimensions), nullable=False),
            Column("tsv", TSVECTOR, nullable=False),
            *indexes,
        )

    # -- schema -------------------------------------------------------------------------------------
    def ensure_schema(self, session: Session) -> None:
        conn = session.connection()
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        self.table.create(conn, checkfirst=True)
        for index in self.table.indexes:
            index.create(conn, checkfirst=True)
        for statement in self.changes.schema():  # written even where no index in memory reads it
            conn.execute(text(statement))

    # -- writes -------------------------------------------------------------------------------------
    def upsert(self, session: Session, entries: Sequence[IndexEntry]) -> None:
        entries = list({e.pk: e for e in entries}.values())  # the last entry for a pk wins
        if not entries:
            return
        t = self.table
        # a pk that moves to another KB leaves its old one: both KBs' indexes must hear of it
        moved = session.execute(
            text(
                f"SELECT t.kb_id, t.pk FROM {self.table_name} AS t JOIN "
                "unnest(CAST(:pks AS bigint[]), CAST(:kbs AS text[])) AS n(pk, kb_id) "
                "ON t.pk = n.pk AND t.kb_id <> n.kb_id"
            ),
            {"pks": [int(e.pk) for e in entries], "kbs": [e.kb_id for e in entries]},
        ).all()
        self.changes.record(
            session, [(str(kb), int(pk)) for kb, pk in moved] + [(e.kb_id, e.pk) for e in entries]
        )
        stmt = pg_insert(t).values(
            pk=bindparam("p_pk"),
            kb_id=bindparam("p_kb"),
            embedding=bindparam("p_vec", type_=Vector(self.dimensions)),
            tsv=_weighted_tsv(
                (bindparam("p_content", type_=Text), "A"),
                (bindparam("p_title", type_=Text), "B"),
                (bindparam("p_section", type_=Text), "C"),
            ),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.pk],
            set_={
                "kb_id": stmt.excluded.kb_id,
                "embedding": stmt.excluded.embedding,
                "tsv": stmt.excluded.tsv,
            },
        )
        session.execute(
            stmt,
            [
                {
                    "p_pk": int(e.pk),
                    "p_kb": e.kb_id,
                    "p_vec": np.asarray(e.vector, dtype=np.float32),
                    # PostgreSQL text cannot hold NUL (PDF extraction sometimes leaves them in)
                    "p_content": e.text.replace("\x00", " "),
                    "p_title": e.title.replace("\x00", " "),
                    "p_section": e.section.replace("\x00", " "),
                }
                for e in entries
            ],
        )

    def delete(self, session: Session, kb_id: str, pks: Sequence[int]) -> None:
        if not pks:
            return
        t = self.table
        session.execute(delete(t).where(t.c.kb_id == kb_id, t.c.pk == any_(_int_array(pks))))
        self.changes.record(session, [(kb_id, int(p)) for p in pks])

    def delete_kb(self, session: Session, kb_id: str) -> None:
        t = self.table
        session.execute(delete(t).where(t.c.kb_id == kb_id))
        self.changes.record(session, [(kb_id, WHOLE_KB)])

    # -- reads --------------------------------------------------------------------------------------
    def vector_search(
        self, session: Session, kb_id: str, vector: np.ndarray, k: int, where: Where | None = None
    ) -> list[Hit]:
        if k <= 0 or not np.any(vector):
            return []  # nothing asked, or a zero vector (no direction to compare)
        t = self.table
        k = int(k)
        distance = t.c.embedding.cosine_distance(np.asarray(vector, dtype=np.float32))
        clauses: list[ColumnElement[bool]] = [t.c.kb_id == kb_id]
        if where is not None:  # in SQL: HNSW then the filter, and exactly when that comes back short
            clauses.append(t.c.pk.in_(where.pks_query(kb_id, "postgresql")))
        if self.dimensions > HNSW_MAX_DIMENSIONS:
            return self._exact(session, distance, clauses, k)
        wanted = k * (_EF_SEARCH_PER_RESULT if where is None else _EF_SEARCH_PER_FILTERED)
        ef_search = min(max(wanted, _EF_SEARCH_MIN), _EF_SEARCH_MAX)
        session.execute(text("SELECT set_config('hnsw.ef_search', :ef, true)"), {"ef": str(ef_search)})
        rows = session.execute(
            select(t.c.pk, distance.label("distance")).where(*clauses).order_by(distance).limit(k)
        ).all()
        if len(rows) < k:  # the KB (or the filter) may hold more than the index's candidates let through
            return self._exact(session, distance, clauses, k)
        return [Hit(pk=int(r[0]), score=1.0 - float(r[1])) for r in rows]

    def _exact(
        self, session: Session, distance: ColumnElement[Any], where: list[ColumnElement[bool]], k: int
    ) -> list[Hit]:
        """Exact nearest rows: distances are materialised first, so the HNSW index cannot be used."""
        t = self.table
        scored = (
            select(t.c.pk, distance.label("distance")).where(*where).cte("scored").prefix_with("MATERIALIZED")
        )
        rows = session.execute(
            select(scored.c.pk, scored.c.distance).order_by(scored.c.distance, scored.c.pk).limit(k)
        ).all()
        return [Hit(pk=int(r[0]), score=1.0 - float(r[1])) for r in rows]

    def keyword_search(
        self, session: Session, kb_id: str, query: str, k: int, where: Where | None = None
    ) -> list[Hit]:
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        if self.keywords.max_bytes > 0:  # BM25 from memory; None: not indexed here, SQL answers
            # a filter's pks come from SQL here (the sqlite store holds them in memory)
            allowed = None if where is None else where.pks(session, kb_id)
            found = self.keywords.search(session, kb_id, query, int(k), allowed)
            if found is not None:
                return [Hit(pk=pk, score=score) for pk, score in found]
        t = self.table
        tsquery = func.websearch_to_tsquery(_config(), literal(" or ".join(terms), Text))
        rank = func.ts_rank_cd(_WEIGHTS, t.c.tsv, tsquery, _NORMALIZATION, type_=Float)
        clauses: list[ColumnElement[bool]] = [t.c.kb_id == kb_id, t.c.tsv.bool_op("@@")(tsquery)]
        if where is not None:
            clauses.append(t.c.pk.in_(where.pks_query(kb_id, "postgresql")))
        rows = session.execute(
            select(t.c.pk, rank.label("rank")).where(*clauses).order_by(rank.desc(), t.c.pk).limit(int(k))
        ).all()
        return [Hit(pk=int(r[0]), score=float(r[1])) for r in rows]

    def count(self, session: Session, kb_id: str) -> int:
        t = self.table
        return int(
            session.execute(select(func.count()).select_from(t).where(t.c.kb_id == kb_id)).scalar() or 0
        )


def _config() -> ColumnElement[Any]:
    """The text search configuration, inlined (a constant of this module, never user input)."""
    return literal_column(f"'{TEXT_CONFIG}'::regconfig", REGCONFIG)


def _weighted_tsv(*parts: tuple[ColumnElement[Any], str]) -> ColumnElement[Any]:
    """``setweight(to_tsvector(cfg, part), label) || ...`` over (text, weight label) pairs."""
    vectors = []
    for value, label in parts:
        assert label in ("A", "B", "C", "D")  # a constant of this module, inlined as a "char"
        tsv = func.to_tsvector(_config(), value, type_=TSVECTOR)
        vectors.append(func.setweight(tsv, literal_column(f"'{label}'"), type_=TSVECTOR))
    combined: ColumnElement[Any] = vectors[0]
    for v in vectors[1:]:
        combined = combined.op("||", return_type=TSVECTOR)(v)
    return combined


def _int_array(values: Sequence[int]) -> ColumnElement[Any]:
    """One bound ``bigint[]`` parameter, however many values (no giant IN lists)."""
    return cast(literal([int(v) for v in values], ARRAY(BigInteger)), ARRAY(BigInteger))
