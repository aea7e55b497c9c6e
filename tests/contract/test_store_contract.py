"""The vector + keyword store contract (``lorebase.adapters.stores.protocol.Store``).

``StoreContract`` holds the cases every backend must pass; a backend's test class subclasses it
and overrides the ``db`` fixture (the database whose sessions the store writes in) and
``new_store`` (a store with ``dimensions`` dimensions; the ``store`` fixture puts its schema in place). Entries are
written in ``db.session()`` and read back in ``db.read_session()``, as the application does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, text, update

from conftest import make_settings
from lorebase.adapters.stores.filters import Where
from lorebase.adapters.stores.protocol import Hit, IndexEntry, Store
from lorebase.adapters.stores.sqlite import SqliteStore
from lorebase.db.engine import Database
from lorebase.db.models import Chunk, Document
from lorebase.runtime import Runtime
from support.documents import describe

KB = "kb-a"
OTHER_KB = "kb-b"

FTS_SYNTAX_QUERIES = [
    '"',
    '"zymurgy',
    "zymurgy*",
    "*",
    "zymurgy AND",
    "AND",
    "OR",
    "NOT zymurgy",
    "NEAR(",
    "NEAR(zymurgy",
    "-",
    "-zymurgy",
    ":",
    "content:zymurgy",
    "^zymurgy",
    "(zymurgy",
    "zymurgy)",
    "{content title}: zymurgy",
    "zymurgy + malt",
    "'; DROP TABLE chunks_fts; --",
]


#: a small vocabulary for the keyword-index cases: stems, forms, accents, words FTS5 cuts
KEYWORDS = [
    "cache",
    "index",
    "search",
    "query",
    "vector",
    "keyword",
    "table",
    "row",
    "column",
    "change",
    "log",
    "process",
    "worker",
    "thread",
    "memory",
    "disk",
    "file",
    "page",
    "chunk",
    "document",
    "title",
    "section",
    "score",
    "rank",
    "term",
    "token",
    "stem",
    "running",
    "runs",
    "runner",
    "ranking",
    "ranked",
    "tables",
    "indexing",
    "searched",
    "café",
    "naïve",
    "résumé",
    "epidemiology",  # Porter as FTS5 has it: -logy -> log, -bly -> ble (not Snowball's)
    "possibly",
    "foo_bar",  # FTS5 cuts it in two
]


def keyword_texts(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``n`` (text, title) pairs of random words from :data:`KEYWORDS`: many rows share terms,
    with different counts and lengths, so BM25's parts all matter."""
    out = []
    for _ in range(n):
        body = " ".join(rng.choice(KEYWORDS, int(rng.integers(3, 40))))
        title = " ".join(rng.choice(KEYWORDS, int(rng.integers(0, 4))))
        out.append((body, title))
    return out


class StoreContract:
    """Behaviour every store backend must show. Subclasses override ``db`` and ``store``."""

    dimensions = 8

    @pytest.fixture
    def db(self) -> Database:
        raise NotImplementedError("a backend's test class provides the database")

    def new_store(self) -> Store:
        """A store with ``dimensions`` dimensions (a backend's test class provides it)."""
        raise NotImplementedError("a backend's test class provides the store")

    @pytest.fixture
    def store(self, db: Database) -> Store:
        store = self.new_store()
        with db.session() as s:
            store.ensure_schema(s)
        return store

    # -- helpers --------------------------------------------------------------------------------
    def entry(
        self, pk: int, vector: Sequence[float] | np.ndarray, text: str = "", kb_id: str = KB, title: str = ""
    ) -> IndexEntry:
        return IndexEntry(
            pk=pk, kb_id=kb_id, vector=np.asarray(vector, dtype=np.float32), text=text, title=title
        )

    def unit(self, i: int, scale: float = 1.0) -> np.ndarray:
        v = np.zeros(self.dimensions, dtype=np.float32)
        v[i] = scale
        return v

    def upsert(self, db: Database, store: Store, entries: Sequence[IndexEntry]) -> None:
        with db.session() as s:
            store.upsert(s, entries)

    def vsearch(
        self,
        db: Database,
        store: Store,
        vector: np.ndarray,
        k: int = 10,
        kb_id: str = KB,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        with db.read_session() as s:
            return store.vector_search(s, kb_id, np.asarray(vector, dtype=np.float32), k, Where.parse(where))

    def ksearch(
        self,
        db: Database,
        store: Store,
        query: str,
        k: int = 10,
        kb_id: str = KB,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        with db.read_session() as s:
            return store.keyword_search(s, kb_id, query, k, Where.parse(where))

    def describe(
        self, db: Database, docs: dict[str, tuple[dict[str, Any], Sequence[int]]], kb_id: str = KB
    ) -> None:
        """The documents the KB's entries come from, as the pipeline writes them (filters match
        documents): ``{document id: (its metadata, its chunks' pks)}``; its filename is ``<id>.txt``."""
        describe(db, docs, kb_id=kb_id)

    def count(self, db: Database, store: Store, kb_id: str = KB) -> int:
        with db.read_session() as s:
            return store.count(s, kb_id)

    def corpus(self, db: Database, store: Store) -> None:
        """Ten documents about rivers; one also mentions a rare word."""
        rng = np.random.default_rng(7)
        texts = [f"The river number {i} flows slowly through the green valley to the sea." for i in range(10)]
        texts[6] = "The river carries barley to the brewery where zymurgy is practised."
        self.upsert(
            db, store, [self.entry(i + 1, rng.normal(size=self.dimensions), t) for i, t in enumerate(texts)]
        )

    # -- protocol ---------------------------------------------------------------------------------
    def test_satisfies_store_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.name, str) and store.name

    def test_ensure_schema_is_idempotent_and_keeps_entries(self, db: Database, store: Store) -> None:
        self.upsert(db, store, [self.entry(1, self.unit(0), "kept")])
        with db.session() as s:
            store.ensure_schema(s)
        assert self.count(db, store) == 1
        assert [h.pk for h in self.ksearch(db, store, "kept")] == [1]

    # -- vector search ----------------------------------------------------------------------------
    def test_vector_search_returns_nearest_first_with_cosine_similarity_scores(
        self, db: Database, store: Store
    ) -> None:
        rng = np.random.default_rng(42)
        # vectors of very different norms: a dot-product or L2 ranking would differ from cosine
        vectors = rng.normal(size=(40, self.dimensions)) * rng.uniform(0.1, 50, size=(40, 1))
        pks = list(range(101, 141))
        self.upsert(db, store, [self.entry(pk, v, f"doc {pk}") for pk, v in zip(pks, vectors, strict=True)])
        query = rng.normal(size=self.dimensions) * 3.0

        hits = self.vsearch(db, store, query, k=10)

        v32 = vectors.astype(np.float32)
        q32 = query.astype(np.float32)
        cosine = (v32 @ q32) / (np.linalg.norm(v32, axis=1) * np.linalg.norm(q32))
        order = np.argsort(-cosine)[:10]
        assert [h.pk for h in hits] == [pks[i] for i in order]
        for hit, i in zip(hits, order, strict=True):
            assert hit.score == pytest.approx(float(cosine[i]), abs=1e-5)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)

    def test_vector_search_exact_match_scores_one_and_opposite_minus_one(
        self, db: Database, store: Store
    ) -> None:
        self.upsert(
            db,
            store,
            [
                self.entry(1, self.unit(0, 2.0)),
                self.entry(2, self.unit(0, -5.0)),
                self.entry(3, self.unit(1)),
            ],
        )
        hits = self.vsearch(db, store, self.unit(0, 0.5), k=3)
        assert [h.pk for h in hits] == [1, 3, 2]
        assert [h.score for h in hits] == pytest.approx([1.0, 0.0, -1.0], abs=1e-5)

    def test_vector_search_returns_at_most_k(self, db: Database, store: Store) -> None:
        self.upsert(db, store, [self.entry(i + 1, self.unit(i)) for i in range(6)])
        assert len(self.vsearch(db, store, self.unit(0), k=2)) == 2
        assert len(self.vsearch(db, store, self.unit(0), k=100)) == 6

    def test_search_of_empty_kb_returns_nothing(self, db: Database, store: Store) -> None:
        assert self.vsearch(db, store, self.unit(0)) == []
        assert self.ksearch(db, store, "anything") == []
        assert self.count(db, store) == 0

    # -- upsert / delete --------------------------------------------------------------------------
    def test_upsert_of_existing_pk_replaces_the_entry(self, db: Database, store: Store) -> None:
        self.upsert(
            db, store, [self.entry(1, self.unit(0), "alpha original"), self.entry(2, self.unit(2), "other")]
        )
        self.upsert(db, store, [self.entry(1, self.unit(1), "bravo replacement")])

        assert self.count(db, store) == 2
        hits = self.vsearch(db, store, self.unit(1), k=10)
        assert sorted(h.pk for h in hits) == [1, 2]  # no duplicate hit for pk 1
        assert hits[0].pk == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert all(h.score < 0.5 for h in self.vsearch(db, store, self.unit(0))), "old vector still indexed"
        assert self.ksearch(db, store, "alpha") == []
        assert [h.pk for h in self.ksearch(db, store, "bravo")] == [1]

    def test_upsert_is_idempotent(self, db: Database, store: Store) -> None:
        entries = [self.entry(i + 1, self.unit(i), f"text {i}") for i in range(4)]
        self.upsert(db, store, entries)
        self.upsert(db, store, entries)
        assert self.count(db, store) == 4
        assert len(self.ksearch(db, store, "text")) == 4

    def test_upsert_of_nothing_is_a_no_op(self, db: Database, store: Store) -> None:
        self.upsert(db, store, [])
        assert self.count(db, store) == 0

    def test_delete_removes_entries_and_ignores_unknown_pks(self, db: Database, store: Store) -> None:
        self.upsert(db, store, [self.entry(i + 1, self.unit(i), f"word{i} shared") for i in range(4)])
        with db.session() as s:
            store.delete(s, KB, [2, 3, 999])

        assert self.count(db, store) == 2
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(1))) == [1, 4]
        assert sorted(h.pk for h in self.ksearch(db, store, "shared")) == [1, 4]
        assert self.ksearch(db, store, "word1") == []
        with db.session() as s:
            store.delete(s, KB, [])  # nothing to do
        assert self.count(db, store) == 2

    def test_delete_kb_removes_only_that_kb(self, db: Database, store: Store) -> None:
        self.upsert(db, store, [self.entry(i + 1, self.unit(i), "apple pie", kb_id=KB) for i in range(3)])
        self.upsert(
            db, store, [self.entry(i + 11, self.unit(i), "apple pie", kb_id=OTHER_KB) for i in range(2)]
        )
        with db.session() as s:
            store.delete_kb(s, KB)

        assert self.count(db, store, KB) == 0
        assert self.vsearch(db, store, self.unit(0), kb_id=KB) == []
        assert self.ksearch(db, store, "apple", kb_id=KB) == []
        assert self.count(db, store, OTHER_KB) == 2
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(0), kb_id=OTHER_KB)) == [11, 12]
        assert sorted(h.pk for h in self.ksearch(db, store, "apple", kb_id=OTHER_KB)) == [11, 12]

    # -- scoping and filters ----------------------------------------------------------------------
    def test_other_kbs_entries_are_never_returned_even_when_identical(
        self, db: Database, store: Store
    ) -> None:
        v = self.unit(3)
        self.upsert(db, store, [self.entry(1, v, "identical twin text", kb_id=KB)])
        self.upsert(db, store, [self.entry(pk, v, "identical twin text", kb_id=OTHER_KB) for pk in (2, 3, 4)])

        assert [h.pk for h in self.vsearch(db, store, v, k=10, kb_id=KB)] == [1]
        assert [h.pk for h in self.ksearch(db, store, "identical twin", k=10, kb_id=KB)] == [1]
        assert sorted(h.pk for h in self.vsearch(db, store, v, k=10, kb_id=OTHER_KB)) == [2, 3, 4]
        assert self.vsearch(db, store, v, kb_id="kb-unknown") == []
        assert self.ksearch(db, store, "identical", kb_id="kb-unknown") == []
        # a filter naming another KB's documents does not leak them either
        self.describe(db, {"mine": ({}, [1])})
        self.describe(db, {f"theirs{pk}": ({}, [pk]) for pk in (2, 3, 4)}, kb_id=OTHER_KB)
        theirs = {"document_id": ["theirs2", "theirs3"]}
        assert self.vsearch(db, store, v, kb_id=KB, where=theirs) == []
        assert self.ksearch(db, store, "identical", kb_id=KB, where=theirs) == []
        assert sorted(h.pk for h in self.vsearch(db, store, v, kb_id=OTHER_KB, where=theirs)) == [2, 3]

    def test_a_filter_restricts_results_before_taking_top_k(self, db: Database, store: Store) -> None:
        # 1..4 are near the query, 5..8 far from it; the filter allows only far ones
        near = [self.entry(i, self.unit(0) + 0.1 * self.unit(i), f"common near{i}") for i in range(1, 5)]
        far = [self.entry(i, -self.unit(0) + 0.1 * self.unit(i - 4), f"common far{i}") for i in range(5, 9)]
        self.upsert(db, store, near + far)
        self.describe(db, {f"d{i}": ({"side": "far" if i > 5 else "near"}, [i]) for i in range(1, 9)})

        vhits = self.vsearch(db, store, self.unit(0), k=2, where={"side": "far"})
        assert len(vhits) == 2 and {h.pk for h in vhits} <= {6, 7, 8}
        khits = self.ksearch(db, store, "common", k=10, where={"document_id": ["d2", "d6"]})
        assert sorted(h.pk for h in khits) == [2, 6]
        assert self.vsearch(db, store, self.unit(0), where={"side": "nowhere"}) == []
        assert self.ksearch(db, store, "common", where={"metadata.side": "nowhere"}) == []
        assert self.vsearch(db, store, self.unit(0), where={"document_id": "unknown"}) == []

    # -- keyword search ---------------------------------------------------------------------------
    def test_keyword_search_ranks_document_with_rare_query_term_first(
        self, db: Database, store: Store
    ) -> None:
        self.corpus(db, store)
        hits = self.ksearch(db, store, "river zymurgy", k=10)
        assert hits[0].pk == 7
        assert len(hits) == 10  # any of the terms matches (OR semantics)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert hits[0].score > hits[1].score

    def test_keyword_search_matches_word_forms(self, db: Database, store: Store) -> None:
        self.corpus(db, store)
        assert self.ksearch(db, store, "Rivers FLOWING", k=3)[0].pk in range(1, 11)
        assert [h.pk for h in self.ksearch(db, store, "ZYMURGY", k=3)] == [7]

    @pytest.mark.parametrize("query", FTS_SYNTAX_QUERIES)
    def test_keyword_search_treats_fts_syntax_as_plain_text(
        self, db: Database, store: Store, query: str
    ) -> None:
        self.corpus(db, store)
        hits = self.ksearch(db, store, query, k=5)
        assert isinstance(hits, list)
        assert all(isinstance(h, Hit) and 1 <= h.pk <= 10 for h in hits)
        if "zymurgy" in query:
            assert hits and hits[0].pk == 7
        assert self.count(db, store) == 10  # and nothing was executed

    @pytest.mark.parametrize("query", ["", "   ", "?!", "...", "the of and", "THE"])
    def test_keyword_search_of_empty_or_stop_word_query_does_not_fail(
        self, db: Database, store: Store, query: str
    ) -> None:
        self.corpus(db, store)
        hits = self.ksearch(db, store, query, k=5)
        assert isinstance(hits, list) and len(hits) <= 5
        if not any(c.isalnum() for c in query):
            assert hits == []

    def test_keyword_search_returns_at_most_k(self, db: Database, store: Store) -> None:
        self.corpus(db, store)
        assert len(self.ksearch(db, store, "river", k=3)) == 3

    # -- counting and transactions ----------------------------------------------------------------
    def test_count_is_per_kb(self, db: Database, store: Store) -> None:
        self.upsert(
            db, store, [self.entry(i + 1, self.unit(i % self.dimensions), kb_id=KB) for i in range(5)]
        )
        self.upsert(db, store, [self.entry(i + 50, self.unit(0), kb_id=OTHER_KB) for i in range(3)])
        assert self.count(db, store, KB) == 5
        assert self.count(db, store, OTHER_KB) == 3
        assert self.count(db, store, "kb-unknown") == 0

    def test_rolled_back_transaction_leaves_no_entries(self, db: Database, store: Store) -> None:
        with pytest.raises(RuntimeError, match="abort"), db.session() as s:
            store.upsert(s, [self.entry(1, self.unit(0), "ghost entry")])
            assert store.count(s, KB) == 1  # visible inside the transaction
            raise RuntimeError("abort")

        assert self.count(db, store) == 0
        assert self.vsearch(db, store, self.unit(0)) == []
        assert self.ksearch(db, store, "ghost") == []

    def test_rolled_back_delete_keeps_entries(self, db: Database, store: Store) -> None:
        self.upsert(
            db, store, [self.entry(1, self.unit(0), "survivor"), self.entry(2, self.unit(1), "survivor")]
        )
        with pytest.raises(RuntimeError, match="abort"), db.session() as s:
            store.delete(s, KB, [1])
            store.delete_kb(s, KB)
            raise RuntimeError("abort")

        assert self.count(db, store) == 2
        assert sorted(h.pk for h in self.ksearch(db, store, "survivor")) == [1, 2]
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(0))) == [1, 2]


class MemoryKeywordContract(StoreContract):
    """What a store ranking keywords from its in-memory index shows besides the contract."""

    @staticmethod
    def hold_builds(monkeypatch: pytest.MonkeyPatch, *classes: type) -> threading.Event:
        """Make the index builds of ``classes`` wait until the returned event is set."""
        release = threading.Event()
        for cls in classes:
            real = cls._build  # type: ignore[attr-defined]

            def held(self: Any, *args: Any, _real: Any = real) -> Any:
                assert release.wait(10)
                return _real(self, *args)

            monkeypatch.setattr(cls, "_build", held)
        return release

    @staticmethod
    def wait_built(*indexes: Any) -> None:
        deadline = time.monotonic() + 10
        while not all(index.ready(KB) for index in indexes):
            assert time.monotonic() < deadline, "the index was never built"
            time.sleep(0.02)

    def test_keyword_search_scopes_to_the_kb_and_its_own_statistics(self, db: Database, store: Store) -> None:
        # another KB full of "cache" does not make "cache" common in this one
        self.upsert(
            db, store, [self.entry(100 + i, self.unit(0), "cache cache", kb_id=OTHER_KB) for i in range(50)]
        )
        self.upsert(
            db,
            store,
            [self.entry(1, self.unit(0), "cache rank"), self.entry(2, self.unit(0), "rank rank rank rank")]
            + [self.entry(3 + i, self.unit(0), "rank token") for i in range(5)],
        )
        hits = self.ksearch(db, store, "cache rank")
        assert hits[0].pk == 1 and {h.pk for h in hits} == set(range(1, 8))
        assert all(h.pk < 100 for h in hits)


class TestSqliteStore(StoreContract):
    """sqlite-vec + FTS5 in a runtime's own SQLite file (also on PostgreSQL test runs)."""

    @pytest.fixture
    def db(self, tmp_path: Path) -> Iterator[Database]:
        data_dir = tmp_path / "sqlite-store"
        runtime = Runtime(make_settings(data_dir, database_url=f"sqlite:///{data_dir / 'lorebase.db'}"))
        yield runtime.db
        runtime.close()

    def new_store(self) -> Store:
        return SqliteStore(dimensions=self.dimensions)


MEMORY = {"cache_bytes": 64 * 1024 * 1024, "keyword_cache_bytes": 64 * 1024 * 1024}


class TestSqliteStoreFromMemory(TestSqliteStore, MemoryKeywordContract):
    """The same contract with the vector and keyword indexes in memory on (``vector_cache.py``,
    ``keyword_cache.py``), the embedded default: searches come from memory, kept in step with the
    file through the change log."""

    def new_store(self) -> Store:
        return SqliteStore(dimensions=self.dimensions, **MEMORY)

    def test_filters_are_evaluated_in_memory(self, db: Database, store: Store) -> None:
        self.test_a_filter_follows_documents_changed_and_removed(db, store)  # type: ignore[misc]
        assert isinstance(store, SqliteStore) and store.filters.ready(KB)

    def test_a_metadata_change_does_not_copy_the_vectors(self, db: Database, store: Store) -> None:
        assert isinstance(store, SqliteStore)
        self.upsert(db, store, [self.entry(i, self.unit(i % self.dimensions)) for i in range(1, 5)])
        self.describe(db, {"a": ({"tag": "x"}, [1, 2]), "b": ({"tag": "y"}, [3, 4])})
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(1), where={"tag": "x"})) == [1, 2]
        matrix = store.cache._kbs[KB].matrix
        with db.session() as s:  # the trigger names b's chunks in the change log
            s.execute(update(Document).where(Document.id == "b").values(meta={"tag": "x"}))
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(1), where={"tag": "x"})) == [1, 2, 3, 4]
        assert store.cache._kbs[KB].matrix is matrix  # re-read, found the same, kept in place

    def test_another_process_s_writes_are_seen_at_the_next_search(self, db: Database, store: Store) -> None:
        # a second store object over the same file stands for another process (a worker)
        writer = SqliteStore(dimensions=self.dimensions, **MEMORY)
        self.upsert(db, writer, [self.entry(1, self.unit(0)), self.entry(2, self.unit(1))])
        assert [h.pk for h in self.vsearch(db, store, self.unit(0), k=1)] == [1]  # loaded
        self.upsert(db, writer, [self.entry(3, self.unit(0) * 3)])  # added
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(0), k=2)) == [1, 3]
        self.upsert(db, writer, [self.entry(1, self.unit(1))])  # replaced: now points elsewhere
        assert [h.pk for h in self.vsearch(db, store, self.unit(0), k=1)] == [3]
        with db.session() as s:
            writer.delete(s, KB, [3])
        assert [h.pk for h in self.vsearch(db, store, self.unit(0), k=3)] in ([1, 2], [2, 1])
        with db.session() as s:
            writer.delete_kb(s, KB)
        assert self.vsearch(db, store, self.unit(0)) == []
        self.upsert(db, writer, [self.entry(9, self.unit(0))])  # a KB emptied and filled again
        assert [h.pk for h in self.vsearch(db, store, self.unit(0))] == [9]

    def test_a_rolled_back_write_never_reaches_the_cache(self, db: Database, store: Store) -> None:
        self.upsert(db, store, [self.entry(1, self.unit(0))])
        assert [h.pk for h in self.vsearch(db, store, self.unit(0))] == [1]
        with pytest.raises(RuntimeError), db.session() as s:
            store.upsert(s, [self.entry(2, self.unit(0))])
            raise RuntimeError("abort")
        assert [h.pk for h in self.vsearch(db, store, self.unit(0))] == [1]

    def test_a_cache_behind_the_pruned_log_reloads_and_matches_vec0(
        self, db: Database, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from lorebase.adapters.stores import change_log

        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((300, self.dimensions)).astype(np.float32)
        self.upsert(db, store, [self.entry(i + 1, v) for i, v in enumerate(vectors[:100])])
        query = rng.standard_normal(self.dimensions).astype(np.float32)
        assert len(self.vsearch(db, store, query, k=5)) == 5  # cached now
        monkeypatch.setattr(change_log, "KEEP_CHANGES", 10)  # the writers keep only 10 rows,
        monkeypatch.setattr(change_log, "PRUNE_EVERY", 40)  # pruned every 40
        writer = SqliteStore(dimensions=self.dimensions, **MEMORY)
        for i in range(100, 300, 50):
            self.upsert(db, writer, [self.entry(j + 1, vectors[j]) for j in range(i, i + 50)])
        with db.session() as s:
            writer.delete(s, KB, list(range(1, 40)))
            oldest = s.execute(text(f"SELECT min(seq) FROM vec_changes_{self.dimensions}")).scalar()
        assert oldest > 101  # the log no longer holds what follows the cache's last change
        scanned = SqliteStore(dimensions=self.dimensions)  # no cache: vec0 itself
        for q in (query, *rng.standard_normal((5, self.dimensions)).astype(np.float32)):
            got = self.vsearch(db, store, q, k=10)
            want = self.vsearch(db, scanned, q, k=10)
            assert [h.pk for h in got] == [h.pk for h in want]
            assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-5)

    def test_filters_match_a_brute_force_reference(self, db: Database, store: Store) -> None:
        """Filters allowing 0.2 %, 10 % and 90 % of 500 chunks (and typed, listed and combined
        ones) return exactly the top k a brute-force pass over the allowed chunks gives."""
        rng = np.random.default_rng(11)
        n = 500
        vectors = rng.standard_normal((n, self.dimensions)).astype(np.float32)
        words = ["alpha", "beta", "gamma", "delta", "omega"]
        texts = [" ".join(rng.choice(words, int(rng.integers(2, 9)))) for _ in range(n)]
        self.upsert(db, store, [self.entry(i + 1, v, texts[i]) for i, v in enumerate(vectors)])
        # documents of 1-4 chunks; metadata drawn per document
        docs: dict[str, tuple[dict[str, Any], list[int]]] = {}
        pk = 1
        while pk <= n:
            size = min(int(rng.integers(1, 5)), n - pk + 1)
            d = len(docs)
            meta: dict[str, Any] = {
                "rare": d == 7,  # one document
                "tenth": bool(d % 10 == 3),
                "most": bool(d % 10 != 3),
                "year": [2020, 2021.0, "2021", True][d % 4],  # a number, the same number, a string, a bool
                "lang": ["en", "de", "fr"][d % 3],
            }
            if d % 5 == 0:
                del meta["lang"]  # missing: never matches
            docs[f"doc{d:03d}"] = (meta, list(range(pk, pk + size)))
            pk += size
        self.describe(db, docs)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        def allowed(keep: Callable[[str, dict[str, Any]], bool]) -> list[int]:
            return sorted(p for doc_id, (meta, pks) in docs.items() if keep(doc_id, meta) for p in pks)

        cases: list[tuple[dict[str, Any], list[int]]] = [
            ({"rare": True}, allowed(lambda _, m: m["rare"] is True)),
            ({"tenth": True}, allowed(lambda _, m: m["tenth"] is True)),
            ({"metadata.most": True}, allowed(lambda _, m: m["most"] is True)),
            ({"year": 2021}, allowed(lambda _, m: type(m["year"]) in (int, float) and m["year"] == 2021)),
            ({"year": "2021"}, allowed(lambda _, m: m["year"] == "2021")),
            ({"year": True}, allowed(lambda _, m: m["year"] is True)),  # true is not 1
            ({"lang": ["de", "fr"]}, allowed(lambda _, m: m.get("lang") in ("de", "fr"))),
            (
                {"lang": "en", "most": True, "filename": ["doc011.txt", "doc012.txt", "doc021.txt"]},
                allowed(
                    lambda d, m: (
                        m.get("lang") == "en" and m["most"] is True and d in ("doc011", "doc012", "doc021")
                    )
                ),
            ),
            ({"lang": "xx"}, []),
        ]
        assert 0 < len(cases[0][1]) <= 4 and 30 <= len(cases[1][1]) <= 70 and len(cases[2][1]) >= 430
        for where, want_pks in cases:
            q = rng.standard_normal(self.dimensions).astype(np.float32)
            got = self.vsearch(db, store, q, k=10, where=where)
            if not want_pks:
                assert got == [], where
                continue
            scores = unit[np.asarray(want_pks) - 1] @ (q / np.linalg.norm(q))
            want = [want_pks[i] for i in np.argsort(-scores)[:10]]
            assert [h.pk for h in got] == want, where
            # keywords: the unfiltered ranking of every match, restricted to the allowed chunks
            keep = set(want_pks)
            ranked = self.ksearch(db, store, "alpha omega", k=n)
            got_k = self.ksearch(db, store, "alpha omega", k=10, where=where)
            assert {h.pk for h in got_k} <= keep, where
            want_scores = [h.score for h in ranked if h.pk in keep][:10]
            assert np.allclose([h.score for h in got_k], want_scores, rtol=1e-4), where

    def test_a_filter_allowing_many_chunks(self, db: Database, store: Store) -> None:
        # more allowed chunks than SQLite (under Chroma) or PostgreSQL bind as parameters of a query
        self.upsert(
            db, store, [self.entry(i, self.unit(i % self.dimensions), f"word{i} common") for i in (1, 2, 3)]
        )
        self.describe(db, {"one": ({"big": False}, [1]), "many": ({"big": True}, [2, 3, *range(10, 70_000)])})
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(0), where={"big": True})) == [2, 3]
        assert sorted(h.pk for h in self.ksearch(db, store, "common", where={"big": True})) == [2, 3]

    def test_a_filter_follows_documents_changed_and_removed(self, db: Database, store: Store) -> None:
        self.upsert(
            db, store, [self.entry(i, self.unit(i % self.dimensions), f"common {i}") for i in range(1, 7)]
        )
        self.describe(
            db, {"a": ({"tag": "x"}, [1, 2]), "b": ({"tag": "y"}, [3, 4]), "c": ({"tag": "x"}, [5, 6])}
        )
        assert sorted(h.pk for h in self.ksearch(db, store, "common", where={"tag": "x"})) == [1, 2, 5, 6]
        with db.session() as s:  # new metadata, the chunks untouched (a re-submitted document)
            s.execute(update(Document).where(Document.id == "b").values(meta={"tag": "x"}))
        assert sorted(h.pk for h in self.ksearch(db, store, "common", where={"tag": "x"})) == [
            1,
            2,
            3,
            4,
            5,
            6,
        ]
        with db.session() as s:  # a document's chunks go, as remove_documents takes them
            store.delete(s, KB, [5, 6])
            s.execute(delete(Chunk).where(Chunk.document_id == "c"))
            s.execute(delete(Document).where(Document.id == "c"))
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(0), where={"tag": "x"})) == [1, 2, 3, 4]
        with db.session() as s:
            s.execute(update(Document).where(Document.id == "a").values(meta={"tag": "z"}))
        assert sorted(h.pk for h in self.vsearch(db, store, self.unit(0), where={"tag": "x"})) == [3, 4]

    # -- keywords from memory ---------------------------------------------------------------
    def assert_same_as_fts5(self, db: Database, store: Store, queries: Sequence[str], **kw: object) -> None:
        fts5 = SqliteStore(dimensions=self.dimensions)  # no index in memory: FTS5 ranks
        for q in queries:
            got = self.ksearch(db, store, q, k=10, **kw)  # type: ignore[arg-type]
            want = self.ksearch(db, fts5, q, k=10, **kw)  # type: ignore[arg-type]
            assert len(got) == len(want), q
            # the same scores (ties may come in another order: compare as score -> pks)
            assert np.allclose([h.score for h in got], [h.score for h in want], rtol=1e-4), q
            top = {round(h.score, 4) for h in want[:-1]}  # the last score's ties may be cut anywhere
            assert {h.pk for h in got if round(h.score, 4) in top} == {
                h.pk for h in want if round(h.score, 4) in top
            }, q

    def test_keyword_ranking_from_memory_is_fts5_s_bm25(self, db: Database, store: Store) -> None:
        rng = np.random.default_rng(3)
        pairs = keyword_texts(rng, 300)
        self.upsert(
            db, store, [self.entry(i + 1, self.unit(0), t, title=h) for i, (t, h) in enumerate(pairs)]
        )
        # a query word FTS5 cuts in two is a phrase there and two terms here (documented): left out
        words = [w for w in KEYWORDS if w != "foo_bar"]
        queries = [" ".join(rng.choice(words, int(rng.integers(1, 5)))) for _ in range(25)]
        queries += [
            "Ranked TABLES",
            "cafe naive",
            "the runner's résumé?",
            "foo",
            "bar possibly epidemiologies",
        ]
        self.assert_same_as_fts5(db, store, queries)
        self.describe(db, {f"d{i}": ({"pick": i % 10 == 0}, [i + 1]) for i in range(300)})
        self.assert_same_as_fts5(db, store, queries[:10], where={"pick": True})

    def test_keyword_index_follows_writes_and_merges(
        self, db: Database, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from lorebase.adapters.stores import keyword_cache

        monkeypatch.setattr(keyword_cache, "MERGE_MIN", 25)  # merge often
        rng = np.random.default_rng(5)
        writer = SqliteStore(dimensions=self.dimensions, **MEMORY)  # another process writing
        pairs = keyword_texts(rng, 200)
        self.upsert(
            db, writer, [self.entry(i + 1, self.unit(0), t, title=h) for i, (t, h) in enumerate(pairs[:100])]
        )
        words = [w for w in KEYWORDS if w != "foo_bar"]
        queries = [" ".join(rng.choice(words, int(rng.integers(1, 4)))) for _ in range(8)]
        self.assert_same_as_fts5(db, store, queries)  # loaded
        for start in range(100, 200, 20):  # added
            part = range(start, start + 20)
            self.upsert(
                db, writer, [self.entry(i + 1, self.unit(0), pairs[i][0], title=pairs[i][1]) for i in part]
            )
            self.assert_same_as_fts5(db, store, queries[:3])
        again = keyword_texts(rng, 30)  # replaced
        self.upsert(
            db, writer, [self.entry(i + 1, self.unit(0), t, title=h) for i, (t, h) in enumerate(again)]
        )
        with db.session() as s:  # removed
            writer.delete(s, KB, list(range(150, 170)))
        with db.read_session() as s, store.keywords.searching(s, KB) as kb:  # type: ignore[attr-defined]
            assert kb is not None and kb.main_rows == kb.n  # merged along the way
        # until the next merge, N and avgdl count removed rows (documented): compare pk sets only
        fts5 = SqliteStore(dimensions=self.dimensions)
        for q in queries:
            got = self.ksearch(db, store, q, k=500)
            want = self.ksearch(db, fts5, q, k=500)
            assert sorted(h.pk for h in got) == sorted(h.pk for h in want), q
        with db.session() as s:
            writer.delete_kb(s, KB)
        assert self.ksearch(db, store, "cache") == []
        self.upsert(db, writer, [self.entry(9, self.unit(0), "a cache again")])
        assert [h.pk for h in self.ksearch(db, store, "cache")] == [9]

    def test_a_background_build_never_holds_up_a_search(
        self, db: Database, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # the runtime's stores build a KB's indexes in a thread while SQL answers (memory_index.py)
        from lorebase.adapters.stores.keyword_cache import KeywordCache
        from lorebase.adapters.stores.vector_cache import VectorCache

        release = self.hold_builds(monkeypatch, KeywordCache, VectorCache)
        background = SqliteStore(dimensions=self.dimensions, background=True, **MEMORY)
        self.upsert(
            db, background, [self.entry(1, self.unit(0), "cache rank"), self.entry(2, self.unit(1), "rank")]
        )
        # answered at once, by FTS5 and vec0, while both builds wait
        assert [h.pk for h in self.ksearch(db, background, "cache")] == [1]
        assert [h.pk for h in self.vsearch(db, background, self.unit(1), k=1)] == [2]
        assert not background.keywords.ready(KB) and not background.cache.ready(KB)
        release.set()
        self.wait_built(background.keywords, background.cache)
        self.upsert(db, background, [self.entry(3, self.unit(1), "cache cache")])  # and kept in step
        assert [h.pk for h in self.ksearch(db, background, "cache")] == [3, 1]
        assert [h.pk for h in self.vsearch(db, background, self.unit(1), k=2)] in ([2, 3], [3, 2])
