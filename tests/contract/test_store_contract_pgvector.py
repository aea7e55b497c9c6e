"""The store contract against pgvector + PostgreSQL full-text, on a real PostgreSQL 16 (pgserver).

Each case gets its own empty database on one session-wide server (``support.pg``); the store's
schema, including ``CREATE EXTENSION vector``, is made by ``ensure_schema`` as in production.
Below the contract: what is particular to PostgreSQL (indexes, HNSW's post-filtering, locks).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from sqlalchemy import select, text
from test_store_contract import KB, KEYWORDS, OTHER_KB, MemoryKeywordContract, StoreContract, keyword_texts

from lorebase.adapters.stores.keyword_cache import K1, B, KeywordCache
from lorebase.adapters.stores.pgvector import HNSW_MAX_DIMENSIONS, PgvectorStore
from lorebase.adapters.stores.protocol import Hit, Store
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


MEMORY = {"keyword_cache_bytes": 64 * 1024 * 1024}
#: the weights of the tsvector's labels content (A), title (B), section (C), as the store ranks
LABEL_WEIGHTS = {"A": 1.0, "B": 0.5, "C": 0.3}


class TestPgvectorStoreFromMemory(TestPgvectorStore, MemoryKeywordContract):
    """The same contract with keyword search ranked from the in-memory index (``keyword_cache.py``
    over the tsvector's lexemes, ``tsvector_rows.py``), as the runtime's pgvector stores do, kept
    in step with the table by the PostgreSQL change log (``change_log.PgChangeLog``)."""

    def new_store(self) -> Store:
        return PgvectorStore(dimensions=self.dimensions, **MEMORY)

    def load(self, db: Database, store: Store, pairs: Sequence[tuple[str, str]], first: int = 1) -> None:
        self.upsert(
            db, store, [self.entry(first + i, self.unit(0), t, title=h) for i, (t, h) in enumerate(pairs)]
        )

    def queries(self, rng: np.random.Generator, n: int) -> list[str]:
        return [" ".join(rng.choice(KEYWORDS, int(rng.integers(1, 5)))) for _ in range(n)]

    def bm25(self, db: Database, store: PgvectorStore, query: str, kb_id: str = KB) -> dict[int, float]:
        """BM25 computed here from the tsvectors themselves (the oracle): FTS5's formula with the
        label weights, N, n and avgdl of the KB's rows."""
        with db.read_session() as s:
            found = s.execute(
                text(
                    f"SELECT t.pk, x.lexeme, x.weights FROM {store.table_name} AS t, unnest(t.tsv) AS x "
                    "WHERE t.kb_id = :kb"
                ),
                {"kb": kb_id},
            ).all()
            asked = s.execute(
                text("SELECT tsvector_to_array(to_tsvector('english', :q))"), {"q": query}
            ).scalar_one()
        f: dict[int, dict[str, float]] = {}
        length: dict[int, int] = {}
        for pk, lexeme, weights in found:
            f.setdefault(pk, {})[lexeme] = sum(LABEL_WEIGHTS[w] for w in weights)
            length[pk] = length.get(pk, 0) + len(weights)
        n_rows = len(f)
        avgdl = sum(length.values()) / n_rows
        scores: dict[int, float] = {}
        for term in asked:
            holding = [pk for pk in f if term in f[pk]]
            idf = max(math.log((n_rows - len(holding) + 0.5) / (len(holding) + 0.5)), 1e-6)
            for pk in holding:
                tf = f[pk][term]
                norm = K1 * (1 - B + B * length[pk] / avgdl)
                scores[pk] = scores.get(pk, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
        return scores

    def assert_same(self, got: list[Hit], want: list[Hit], query: str) -> None:
        """The same scores, and the same pks above the last score (its ties may be cut anywhere)."""
        assert len(got) == len(want), query
        assert np.allclose([h.score for h in got], [h.score for h in want], rtol=1e-4), query
        top = {round(h.score, 4) for h in want[:-1]}
        assert {h.pk for h in got if round(h.score, 4) in top} == {
            h.pk for h in want if round(h.score, 4) in top
        }, query

    def assert_same_as_a_fresh_build(self, db: Database, store: Store, queries: Sequence[str]) -> None:
        fresh = PgvectorStore(dimensions=self.dimensions, **MEMORY)  # builds on its first search
        for q in queries:
            self.assert_same(self.ksearch(db, store, q, k=10), self.ksearch(db, fresh, q, k=10), q)

    # -- ranking ----------------------------------------------------------------------------------
    def test_keyword_ranking_from_memory_is_bm25_over_the_tsvector(
        self, db: Database, store: PgvectorStore
    ) -> None:
        rng = np.random.default_rng(3)
        self.load(db, store, keyword_texts(rng, 300))
        queries = [*self.queries(rng, 25), "Ranked TABLES", "cafe naive", "possibly epidemiologies"]
        for q in queries:
            hits = self.ksearch(db, store, q, k=10)
            assert store.keywords.ready(KB)
            want = sorted(self.bm25(db, store, q).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            self.assert_same(hits, [Hit(pk=pk, score=score) for pk, score in want], q)
        allowed = sorted(rng.choice(np.arange(1, 301), 30, replace=False).tolist())
        self.describe(db, {f"d{pk}": ({"pick": pk in allowed}, [pk]) for pk in range(1, 301)})
        for q in queries[:10]:
            scores = self.bm25(db, store, q)
            want = sorted(((pk, sc) for pk, sc in scores.items() if pk in allowed), key=lambda kv: -kv[1])
            got = self.ksearch(db, store, q, k=10, where={"pick": True})
            self.assert_same(got, [Hit(pk=pk, score=sc) for pk, sc in want[:10]], q)

    # -- keeping in step ----------------------------------------------------------------------------
    def test_keyword_index_follows_writes_and_merges(
        self, db: Database, store: PgvectorStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from lorebase.adapters.stores import keyword_cache

        monkeypatch.setattr(keyword_cache, "MERGE_MIN", 25)  # merge often
        rng = np.random.default_rng(5)
        writer = PgvectorStore(dimensions=self.dimensions, **MEMORY)  # another process writing
        pairs = keyword_texts(rng, 200)
        self.load(db, writer, pairs[:100])
        queries = self.queries(rng, 8)
        self.assert_same_as_a_fresh_build(db, store, queries)  # built
        for start in range(100, 200, 20):  # added
            self.load(db, writer, pairs[start : start + 20], first=start + 1)
            self.assert_same_as_a_fresh_build(db, store, queries[:3])
        self.load(db, writer, keyword_texts(rng, 30))  # replaced
        with db.session() as s:  # removed (a document's chunks)
            writer.delete(s, KB, list(range(150, 170)))
        with db.read_session() as s, store.keywords.searching(s, KB) as kb:
            assert kb is not None and kb.main_rows == kb.n  # merged along the way
        self.assert_same_as_a_fresh_build(db, store, queries)
        assert not {h.pk for h in self.ksearch(db, store, " ".join(KEYWORDS), k=500)} & set(range(150, 170))
        with db.session() as s:
            writer.delete_kb(s, KB)
        assert self.ksearch(db, store, "cache") == []
        self.load(db, writer, [("a cache again", "")], first=9)
        assert [h.pk for h in self.ksearch(db, store, "cache")] == [9]

    def test_writers_committing_out_of_order_are_all_seen(self, db: Database, store: PgvectorStore) -> None:
        """A takes its change-log seq (and xid) first, B second; B commits first, and a search
        in between brings the index up to B. A's commit must still reach the index."""
        self.load(db, store, [("cache base", "")])
        assert [h.pk for h in self.ksearch(db, store, "cache")] == [1]  # built
        with db.session() as a:
            store.upsert(a, [self.entry(2, self.unit(0), "cache alpha")])
            with db.session() as b:
                store.upsert(b, [self.entry(3, self.unit(0), "cache bravo")])
            assert sorted(h.pk for h in self.ksearch(db, store, "cache")) == [1, 3]  # B, not A yet
        with db.read_session() as s:
            found = s.execute(text(f"SELECT pk, seq FROM {store.changes.table} WHERE pk IN (2, 3)"))
            seqs = {int(pk): int(seq) for pk, seq in found}
        assert seqs[2] < seqs[3], "A did not take the lower seq: this case tests nothing"
        assert sorted(h.pk for h in self.ksearch(db, store, "cache")) == [1, 2, 3]
        self.assert_same_as_a_fresh_build(db, store, ["cache", "alpha bravo", "base"])

    def test_a_session_that_has_written_is_answered_by_sql_and_teaches_the_index_nothing(
        self, db: Database, store: PgvectorStore
    ) -> None:
        self.load(db, store, [("cache base", "")])
        assert [h.pk for h in self.ksearch(db, store, "cache")] == [1]  # built
        with pytest.raises(RuntimeError, match="abort"), db.session() as s:
            store.upsert(s, [self.entry(2, self.unit(0), "cache ghost")])
            assert sorted(h.pk for h in store.keyword_search(s, KB, "cache", 10)) == [1, 2]  # its own view
            raise RuntimeError("abort")
        assert [h.pk for h in self.ksearch(db, store, "cache ghost")] == [1]
        self.assert_same_as_a_fresh_build(db, store, ["cache", "ghost"])

    def test_an_index_behind_the_pruned_log_reloads(
        self, db: Database, store: PgvectorStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from lorebase.adapters.stores import change_log

        rng = np.random.default_rng(9)
        pairs = keyword_texts(rng, 300)
        self.load(db, store, pairs[:100])
        queries = self.queries(rng, 6)
        self.assert_same_as_a_fresh_build(db, store, queries)  # built
        monkeypatch.setattr(change_log, "KEEP_CHANGES", 10)  # the writers keep only 10 rows,
        monkeypatch.setattr(change_log, "PRUNE_EVERY", 40)  # pruned every 40
        writer = PgvectorStore(dimensions=self.dimensions, **MEMORY)
        for i in range(100, 300, 50):
            self.load(db, writer, pairs[i : i + 50], first=i + 1)
        with db.session() as s:
            writer.delete(s, KB, list(range(1, 40)))
        with db.read_session() as s:
            kept = s.execute(text(f"SELECT count(*) FROM {store.changes.table}")).scalar_one()
        assert kept < 100, "the log was not pruned: this case tests nothing"
        self.assert_same_as_a_fresh_build(db, store, queries)

    def test_a_pk_moved_to_another_kb_leaves_the_old_kb_s_index(self, db: Database, store: Store) -> None:
        self.load(db, store, [("cache one", ""), ("cache two", "")])
        assert sorted(h.pk for h in self.ksearch(db, store, "cache")) == [1, 2]  # built
        self.upsert(db, store, [self.entry(2, self.unit(0), "cache two", kb_id=OTHER_KB)])
        assert [h.pk for h in self.ksearch(db, store, "cache")] == [1]
        assert [h.pk for h in self.ksearch(db, store, "cache", kb_id=OTHER_KB)] == [2]

    def test_a_background_build_never_holds_up_a_search(
        self, db: Database, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        release = self.hold_builds(monkeypatch, KeywordCache)
        background = PgvectorStore(dimensions=self.dimensions, background=True, **MEMORY)
        self.upsert(
            db, background, [self.entry(1, self.unit(0), "cache rank"), self.entry(2, self.unit(1), "rank")]
        )
        # answered at once, by ts_rank_cd, while the build waits
        assert [h.pk for h in self.ksearch(db, background, "cache")] == [1]
        assert not background.keywords.ready(KB)
        release.set()
        self.wait_built(background.keywords)
        self.upsert(db, background, [self.entry(3, self.unit(1), "cache cache")])  # and kept in step
        assert [h.pk for h in self.ksearch(db, background, "cache")] == [3, 1]
