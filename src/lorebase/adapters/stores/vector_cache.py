"""Exact vector search for the sqlite store from a per-KB matrix held in memory, kept in step with
the SQLite file through a change log.

sqlite-vec's ``vec0`` answers a KNN query by reading every vector of the KB's partition from the
database pages and comparing them one by one: ~60-75 ms at 100k chunks of 384 dimensions on this
machine (``benchmarks/README.md``, Scale). Its ``int8``/``bit`` columns were measured slower
still (no SIMD kernels in 0.1.9), and recall of the ``bit`` candidates was ~0.5. The same exact
search as one matrix-vector product over a float32 matrix in memory (BLAS) takes a few ms, with
the same results: no approximation, recall 1.0.

**The SQLite file stays the truth.** The store's change log (``change_log.py``) says which pks
of the KB changed since the cache last looked; the cache reads those pks' vectors back from
``vec0``: present → (re)load, absent → drop.

Building, the byte budget (``LOREBASE_VECTOR_CACHE_MB``) and eviction are ``memory_index.py``'s;
a KB larger than the whole budget is searched by ``vec0`` as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from lorebase.adapters.stores.change_log import ChangeLog
from lorebase.adapters.stores.filters import Allowed
from lorebase.adapters.stores.memory_index import PerKbIndex


def _normalised(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


@dataclass
class _KbVectors:
    """One KB's unit vectors (rows ``[:n]`` of ``matrix``) and their pks. Searches read a
    consistent (matrix, pks, n) triple taken under the lock; appends write rows past ``n``, and
    any change to an existing row builds new arrays (copy on write)."""

    matrix: np.ndarray
    pks: np.ndarray
    n: int
    seq: int  # the last change-log row applied
    rows: dict[int, int] = field(default_factory=dict)  # pk -> row

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.pks.nbytes)


class VectorCache(PerKbIndex[_KbVectors]):
    def __init__(
        self, vec_table: str, changes: ChangeLog, dimensions: int, max_bytes: int, *, background: bool = False
    ) -> None:
        super().__init__(changes, max_bytes, background=background)
        self.vec_table, self.dimensions = vec_table, dimensions

    # -- search ------------------------------------------------------------------------------
    def search(
        self, session: Session, kb_id: str, vector: np.ndarray, k: int, allowed: Allowed | None
    ) -> list[tuple[int, float]] | None:
        """The KB's ``k`` nearest (pk, cosine similarity), best first, among ``allowed`` (all when
        None); None when this KB is not cached here (larger than the whole budget, or still being
        built): the caller asks ``vec0``."""
        with self.searching(session, kb_id) as kb:
            if kb is None:
                return None
            matrix, pks, n = kb.matrix, kb.pks, kb.n  # a consistent triple (see _KbVectors)
        if n == 0:
            return []
        ids = pks[:n]
        q = np.asarray(vector, dtype=np.float32)
        q = q / np.linalg.norm(q)
        scores = matrix[:n] @ q  # every row, then the filter: cheaper than copying the allowed rows
        candidates = np.arange(n)
        if allowed is not None:
            candidates = np.flatnonzero(allowed.mask(ids))
            if not len(candidates):
                return []
        k = min(k, len(candidates))
        if k < len(candidates):
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        top = candidates[np.lexsort((ids[candidates], -scores[candidates]))]  # best first; ties by pk
        return [(int(ids[i]), float(scores[i])) for i in top]

    def _position(self, kb: _KbVectors) -> int:
        return kb.seq

    def _nbytes(self, kb: _KbVectors) -> int:
        return kb.nbytes

    def _estimate(self, session: Session, kb_id: str) -> int:
        count = int(
            session.execute(
                text(f"SELECT count(*) FROM {self.vec_table} WHERE kb_id = :kb"), {"kb": kb_id}
            ).scalar()
            or 0
        )
        return count * (self.dimensions * 4 + 8)

    def _build(self, session: Session, kb_id: str, head: int) -> _KbVectors:
        found = session.execute(
            text(f"SELECT rowid, embedding FROM {self.vec_table} WHERE kb_id = :kb"), {"kb": kb_id}
        ).all()
        pks = np.fromiter((r[0] for r in found), dtype=np.int64, count=len(found))
        if found:
            raw = np.frombuffer(b"".join(r[1] for r in found), dtype=np.float32)
            matrix = _normalised(raw.reshape(len(found), self.dimensions).copy())
        else:
            matrix = np.zeros((0, self.dimensions), dtype=np.float32)
        return _KbVectors(matrix, pks, len(found), head, {int(p): i for i, p in enumerate(pks)})

    def _apply(self, session: Session, kb_id: str, kb: _KbVectors, head: int) -> _KbVectors | None:
        """Bring ``kb`` up to ``head``; None when it must be reloaded (the log was pruned past it,
        or the whole KB was removed)."""
        pks = self.changes.since(session, kb_id, kb.seq, head)
        if pks is None:
            return None
        if not pks:
            kb.seq = head
            return kb
        found: dict[int, np.ndarray] = {}
        ordered = sorted(pks)
        for i in range(0, len(ordered), 500):
            marks = ",".join(str(p) for p in ordered[i : i + 500])
            for rowid, blob in session.execute(
                text(
                    f"SELECT rowid, embedding FROM {self.vec_table} WHERE rowid IN ({marks}) AND kb_id = :kb"
                ),
                {"kb": kb_id},
            ).all():
                found[int(rowid)] = np.frombuffer(blob, dtype=np.float32)
        # a row named again with the same vector did not change (its document's metadata did:
        # filter_cache.py); only rows that go or change cost new arrays
        touched = [p for p in pks if p in kb.rows and not self._same(kb, p, found.get(p))]
        if touched:  # an existing row changes or goes: new arrays, readers keep the old ones
            keep = [p for p in kb.pks[: kb.n].tolist() if p not in pks or p in found]
            kb = self._rebuilt(kb, keep, found, head)
            return kb
        added = [p for p in ordered if p in found and p not in kb.rows]
        self._append(kb, added, found)
        kb.seq = head
        return kb

    @staticmethod
    def _same(kb: _KbVectors, pk: int, vector: np.ndarray | None) -> bool:
        if vector is None:
            return False
        return bool(np.allclose(kb.matrix[kb.rows[pk]], _normalised(vector[None, :])[0], atol=1e-6))

    def _rebuilt(
        self, kb: _KbVectors, keep: list[int], found: dict[int, np.ndarray], head: int
    ) -> _KbVectors:
        new = [p for p in found if p not in kb.rows]
        pks = np.asarray(keep + new, dtype=np.int64)
        matrix = np.empty((len(pks), self.dimensions), dtype=np.float32)
        for i, p in enumerate(keep):
            matrix[i] = found[p] if p in found else kb.matrix[kb.rows[p]]
        for j, p in enumerate(new, start=len(keep)):
            matrix[j] = found[p]
        fresh = [i for i, p in enumerate(pks.tolist()) if p in found]
        matrix[fresh] = _normalised(matrix[fresh])
        return _KbVectors(matrix, pks, len(pks), head, {int(p): i for i, p in enumerate(pks)})

    def _append(self, kb: _KbVectors, added: list[int], found: dict[int, np.ndarray]) -> None:
        if not added:
            return
        need = kb.n + len(added)
        if need > len(kb.pks):  # grow (new arrays: readers keep the old ones)
            capacity = max(need, int(len(kb.pks) * 1.5) + 64)
            matrix = np.zeros((capacity, self.dimensions), dtype=np.float32)
            pks = np.zeros(capacity, dtype=np.int64)
            matrix[: kb.n], pks[: kb.n] = kb.matrix[: kb.n], kb.pks[: kb.n]
            kb.matrix, kb.pks = matrix, pks
        kb.matrix[kb.n : need] = _normalised(np.stack([found[p] for p in added]))
        kb.pks[kb.n : need] = added
        for i, p in enumerate(added, start=kb.n):
            kb.rows[p] = i
        kb.n = need  # last: a reader that took the old n never sees a half-written row
