"""The store contract against pgvector + PostgreSQL full-text, on a real PostgreSQL 16 (pgserver).

Each case gets its own empty database on one session-wide server (``support.pg``); the store's
schema, including ``CREATE EXTENSION vector``, is made by ``ensure_schema`` as in production.
Below the contract: what is particular to PostgreSQL (indexes, HNSW's post-filtering, locks).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import select, text
from test_store_contract import KB, OTHER_KB, StoreContract

from lorebase.adapters.stores.pgvector import HNSW_MAX_DIMENSIONS, PgvectorStore
from lorebase.adapters.stores.protocol import Store
from lorebase.db.engine import Database
from support.pg import drop_database, migrated_database, pg_url  # noqa: F401  (pytest fixtures)


class TestPgvectorStore(StoreContract):
    """pgvector (HNSW, cosine) + tsvector/GIN in a PostgreSQL database of its own per case."""

    @pytest.fixture
    def db(self, pg_url: str) -> Iterator[Database]:  # noqa: F811
        url = migrated_database(pg_url)  # the app's tables too: filters match documents
        db = Database(url)
        try:
            yield db
        finally:
            db.dispose()
            drop_database(pg_url, url)

    def new_store(self) -> Store:
        return PgvectorStore(dimensions=self.dimensions)

    # -- PostgreSQL specifics ---------------------------------------------------------------------
    def test_schema_has_hnsw_cosine_gin_and_kb_indexes(self, db: Database, store: PgvectorStore) -> None:
        with db.read_session() as s:
            ext = s.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
            rows = s.execute(
                text(
                    "SELECT c.relname, am.amname, i.indisvalid, "
                    "  (SELECT string_agg(opc.opcname, ',') FROM unnest(i.indclass) AS u(oid) "
                    "   JOIN pg_opclass opc ON opc.oid = u.oid) "
                    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = CAST(:t AS regclass)"
                ),
                {"t": store.table_name},
            ).all()
            coltype = s.execute(
                text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attname = 'embedding'"
                ),
                {"t": store.table_name},
            ).scalar()
        assert ext is not None
        assert coltype == f"vector({self.dimensions})"
        methods = {(am, opclass) for _, am, valid, opclass in rows if valid}
        assert ("hnsw", "vector_cosine_ops") in methods
        assert ("gin", "tsvector_ops") in methods
        assert any(am == "btree" and opclass == "text_ops" for am, opclass in methods)  # kb_id

    def small_kb_beside_a_large_one(self, db: Database, store: PgvectorStore) -> tuple[np.ndarray, list[int]]:
        """3000 entries of OTHER_KB and 5 of KB; returns a query and KB's pks, nearest first."""
        rng = np.random.default_rng(3)
        big = rng.normal(size=(3000, self.dimensions))
        self.upsert(
            db, store, [self.entry(10_000 + i, v, "shared words", kb_id=OTHER_KB) for i, v in enumerate(big)]
        )
        mine = rng.normal(size=(5, self.dimensions)).astype(np.float32)
        self.upsert(db, store, [self.entry(i + 1, v, "shared words", kb_id=KB) for i, v in enumerate(mine)])
        with db.session() as s:  # planner statistics, as autovacuum would gather them
            s.execute(text(f"ANALYZE {store.table_name}"))
        query = big[0].astype(np.float32)
        cosine = (mine @ query) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(query))
        return query, [int(i) + 1 for i in np.argsort(-cosine)]

    def test_small_kb_beside_a_large_one_gets_all_its_nearest_entries(
        self, db: Database, store: PgvectorStore
    ) -> None:
        query, nearest = self.small_kb_beside_a_large_one(db, store)
        assert [h.pk for h in self.vsearch(db, store, query, k=10, kb_id=KB)] == nearest
        assert [h.pk for h in self.vsearch(db, store, query, k=3, kb_id=KB)] == nearest[:3]
        assert sorted(h.pk for h in self.ksearch(db, store, "shared", k=10, kb_id=KB)) == [1, 2, 3, 4, 5]

    def test_when_the_hnsw_index_comes_back_short_the_search_is_exact(
        self, db: Database, store: PgvectorStore
    ) -> None:
        """HNSW filters by KB after taking its ef_search candidates: forced onto the index, a small
        KB's query gets few or none of its rows from it; the store must notice and search exactly."""
        query, nearest = self.small_kb_beside_a_large_one(db, store)
        t = store.table
        distance = t.c.embedding.cosine_distance(query)
        with db.read_session() as s:
            s.execute(text("SET LOCAL enable_sort = off"))  # the planner now prefers the HNSW order
            s.execute(text("SET LOCAL enable_seqscan = off"))
            from_index = s.execute(select(t.c.pk).where(t.c.kb_id == KB).order_by(distance).limit(10)).all()
            assert len(from_index) < 5, "the index did not come back short: this case tests nothing"
            hits = store.vector_search(s, KB, query, 10)
        assert [h.pk for h in hits] == nearest

    def test_large_kb_search_through_the_index_finds_the_true_neighbours(
        self, db: Database, store: PgvectorStore
    ) -> None:
        rng = np.random.default_rng(11)
        vectors = rng.normal(size=(3000, self.dimensions)).astype(np.float32)
        self.upsert(db, store, [self.entry(i + 1, v) for i, v in enumerate(vectors)])
        with db.session() as s:
            s.execute(text(f"ANALYZE {store.table_name}"))
        norms = np.linalg.norm(vectors, axis=1)
        found = 0
        for q in rng.normal(size=(20, self.dimensions)).astype(np.float32):
            hits = self.vsearch(db, store, q, k=10)
            assert len(hits) == 10
            truth = np.argsort(-(vectors @ q) / (norms * np.linalg.norm(q)))[:10] + 1
            found += len({h.pk for h in hits} & set(truth.tolist()))
        assert found / 200 >= 0.9  # HNSW is approximate; recall at ef_search 100 is near 1 here

    def test_delete_is_scoped_by_kb(self, db: Database, store: Store) -> None:
        self.upsert(db, store, [self.entry(1, self.unit(0), "mine", kb_id=KB)])
        with db.session() as s:
            store.delete(s, OTHER_KB, [1])
        assert self.count(db, store, KB) == 1

    def test_text_with_nul_characters_is_indexed(self, db: Database, store: Store) -> None:
        self.upsert(
            db, store, [self.entry(1, self.unit(0), "pdf\x00extracted zymurgy\x00text", title="t\x00")]
        )
        assert [h.pk for h in self.ksearch(db, store, "zymurgy")] == [1]
        assert [h.pk for h in self.ksearch(db, store, "extracted")] == [1]

    def test_title_match_counts_less_than_content_match(self, db: Database, store: Store) -> None:
        self.upsert(
            db,
            store,
            [
                self.entry(1, self.unit(0), "a story about malt", title="zymurgy"),
                self.entry(2, self.unit(1), "a story about zymurgy", title="malt"),
            ],
        )
        hits = self.ksearch(db, store, "zymurgy")
        assert [h.pk for h in hits] == [2, 1]
        assert hits[0].score > hits[1].score > 0

    def test_concurrent_ensure_schema_on_a_fresh_database(self, db: Database) -> None:
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def run() -> None:
            try:
                barrier.wait()
                with db.session() as s:
                    PgvectorStore(dimensions=16).ensure_schema(s)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        store = PgvectorStore(dimensions=16)
        self.dimensions = 16
        self.upsert(db, store, [self.entry(1, self.unit(3), "ok")])
        assert [h.pk for h in self.vsearch(db, store, self.unit(3))] == [1]

    def test_dimensions_beyond_hnsw_limit_search_exactly(self, db: Database) -> None:
        self.dimensions = HNSW_MAX_DIMENSIONS + 48
        store = PgvectorStore(dimensions=self.dimensions)
        with db.session() as s:
            store.ensure_schema(s)
        rng = np.random.default_rng(5)
        vectors = rng.normal(size=(30, self.dimensions)).astype(np.float32)
        self.upsert(db, store, [self.entry(i + 1, v, f"doc {i}") for i, v in enumerate(vectors)])
        q = vectors[4] + 0.01
        hits = self.vsearch(db, store, q, k=3)
        assert hits[0].pk == 5 and hits[0].score == pytest.approx(1.0, abs=1e-3)
        with db.read_session() as s:
            methods = (
                s.execute(
                    text(
                        "SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = CAST(:t AS regclass)"
                    ),
                    {"t": store.table_name},
                )
                .scalars()
                .all()
            )
        assert "hnsw" not in methods
