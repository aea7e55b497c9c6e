"""The store contract against Qdrant in its local mode (in memory, and a directory; no server).

Qdrant cannot join the SQL transaction: its writes take effect when made, so the two rollback
cases of the contract are expected to fail here (strict: they must not start passing unnoticed).
The session passed to the store is the runtime's, as in production, and is ignored by it.
Below the contract: what is particular to this store (BM25 scores, persistence, large filters).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_client")
pytest.importorskip("snowballstemmer")

from test_store_contract import KB, OTHER_KB, StoreContract

from lorebase.adapters.stores.protocol import Store
from lorebase.adapters.stores.qdrant import AVG_LENGTH, K1, B, QdrantStore
from lorebase.db.engine import Database
from lorebase.runtime import Runtime

NOT_TRANSACTIONAL = pytest.mark.xfail(
    strict=True,
    reason="an external store cannot join the SQL transaction: a rollback does not undo its writes",
)


class TestQdrantStore(StoreContract):
    """Qdrant local mode: dense cosine vectors + BM25 over sparse vectors with server-side IDF."""

    @pytest.fixture
    def db(self, runtime: Runtime) -> Iterator[Database]:
        self.opened: list[QdrantStore] = []
        yield runtime.db
        for store in self.opened:
            store.close()

    def new_store(self, path: Path | None = None) -> Store:
        """In memory: the local directory mode persists each point on its own (~150 points/s)."""
        store = QdrantStore(dimensions=self.dimensions, path=path)
        self.opened.append(store)
        return store

    @NOT_TRANSACTIONAL
    def test_rolled_back_transaction_leaves_no_entries(self, db: Database, store: Store) -> None:
        super().test_rolled_back_transaction_leaves_no_entries(db, store)

    @NOT_TRANSACTIONAL
    def test_rolled_back_delete_keeps_entries(self, db: Database, store: Store) -> None:
        super().test_rolled_back_delete_keeps_entries(db, store)

    # -- Qdrant specifics -------------------------------------------------------------------------
    def test_keyword_score_is_bm25(self, db: Database, store: Store) -> None:
        texts = ["malt malt hops", "hops water", "water yeast", "yeast"]
        self.upsert(db, store, [self.entry(i + 1, self.unit(i), t) for i, t in enumerate(texts)])
        hits = self.ksearch(db, store, "malt")
        n, df, tf, length = 4, 1, 2, 3
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        expected = idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / AVG_LENGTH))
        assert [h.pk for h in hits] == [1]
        assert hits[0].score == pytest.approx(expected, rel=1e-4)

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

    def test_small_kb_beside_a_large_one_gets_all_its_nearest_entries(
        self, db: Database, store: Store
    ) -> None:
        rng = np.random.default_rng(3)
        big = rng.normal(size=(1500, self.dimensions)).astype(np.float32)
        self.upsert(
            db, store, [self.entry(10_000 + i, v, "shared words", kb_id=OTHER_KB) for i, v in enumerate(big)]
        )
        mine = rng.normal(size=(5, self.dimensions)).astype(np.float32)
        self.upsert(db, store, [self.entry(i + 1, v, "shared words", kb_id=KB) for i, v in enumerate(mine)])
        query = big[0]
        cosine = (mine @ query) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(query))
        nearest = [int(i) + 1 for i in np.argsort(-cosine)]

        assert [h.pk for h in self.vsearch(db, store, query, k=10, kb_id=KB)] == nearest
        assert [h.pk for h in self.vsearch(db, store, query, k=3, kb_id=KB)] == nearest[:3]
        assert sorted(h.pk for h in self.ksearch(db, store, "shared", k=10, kb_id=KB)) == [1, 2, 3, 4, 5]

    def test_entries_survive_reopening_the_directory(self, db: Database, tmp_path: Path) -> None:
        store = self.new_store(tmp_path / "qdrant")
        with db.session() as s:
            store.ensure_schema(s)
        self.upsert(db, store, [self.entry(1, self.unit(0), "persistent zymurgy")])
        assert isinstance(store, QdrantStore)
        store.close()
        reopened = self.new_store(tmp_path / "qdrant")
        with db.session() as s:
            reopened.ensure_schema(s)
        assert self.count(db, reopened) == 1
        assert [h.pk for h in self.ksearch(db, reopened, "zymurgy")] == [1]
        assert [h.pk for h in self.vsearch(db, reopened, self.unit(0))] == [1]

    def test_delete_is_scoped_by_kb(self, db: Database, store: Store) -> None:
        self.upsert(db, store, [self.entry(1, self.unit(0), "mine", kb_id=KB)])
        with db.session() as s:
            store.delete(s, OTHER_KB, [1])
        assert self.count(db, store, KB) == 1

    def test_path_and_url_together_are_refused(self) -> None:
        with pytest.raises(ValueError, match="not both"):
            QdrantStore(self.dimensions, path="somewhere", url="http://localhost:6333")
