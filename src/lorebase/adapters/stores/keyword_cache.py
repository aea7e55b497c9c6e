"""Keyword search from a per-KB inverted index held in memory, ranked by BM25, kept in step with
the database through the store's change log (``change_log.py``). Both SQL stores use it: the
sqlite store (terms of its FTS5 table, ``fts5_rows.py``) and the pgvector store (lexemes of its
``tsvector`` column, ``tsvector_rows.py``); what differs between them is how rows are read and
cut into terms (:class:`KeywordRows`), and which change log says what changed.

FTS5 ranks a query by computing BM25 for *every* row that holds any of its terms, in every KB of
the table (``kb_id`` is a column it cannot index), then sorts them: 45-75 ms at 100k chunks on
the 2-core machines, most of a hybrid search (``benchmarks/README.md``, Scale); PostgreSQL's
``ts_rank_cd`` over every GIN match of the KB took ~100 ms. The same BM25 over a KB's own
postings, as a few numpy operations per query term, takes ~1.5 ms, and only the KB's rows are
ever touched.

**What it computes is FTS5's ranking**: ``bm25()`` with the stores' column weights (content 1.0,
title 0.5, section 0.3): per term, IDF ``log((N - n + 0.5) / (n + 0.5))`` (at least 1e-6) times
``f (k1 + 1) / (f + k1 (1 - b + b D / avgdl))``, where ``f`` is the weighted count of the term in
the row and ``D`` the row's token count over the three columns. ``N``, ``n`` and ``avgdl`` are
the KB's, not the whole table's (a KB's ranking does not depend on other tenants' texts). On the
sqlite store the terms are FTS5's own, so the scores are FTS5's (a query word FTS5 would cut into
several tokens, ``foo_bar``, asks for each of them, not for the phrase); on the pgvector store
they are the ``tsvector``'s lexemes (``english``: stop words dropped, so ``D`` counts the others).

**The database stays the truth.** A KB is read on its first keyword search in a process; after
that each search reads the change log and re-reads only the rows that changed. Rows added since
the last build are kept in a small side index, and rows removed or replaced are masked; when
those reach :data:`MERGE_FRACTION` of the KB, the index is rebuilt from what it holds (no
re-read). Until then, ``n`` and ``avgdl`` still count the removed rows, a negligible drift that
the rebuild clears.

Indexes are built (in ``serve``, in the background while SQL answers) and evicted (least recently
used beyond ``max_bytes``, ``LOREBASE_KEYWORD_CACHE_MB``) as ``memory_index.py`` says; a KB larger
than the whole budget is searched by SQL (FTS5, ``ts_rank_cd``) as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlalchemy.orm import Session

from lorebase.adapters.stores.change_log import Changes
from lorebase.adapters.stores.filters import Allowed
from lorebase.adapters.stores.memory_index import PerKbIndex

#: BM25 parameters (FTS5's)
K1, B = 1.2, 0.75
#: weight of a term occurrence in content, title and section (the stores' column weights)
WEIGHTS = (1.0, 0.5, 0.3)
#: rebuild the main index when added + removed rows since the last build reach this share of it
MERGE_FRACTION = 0.1
#: ... or this many rows, for small KBs
MERGE_MIN = 512
#: rows analysed together when a KB is loaded (bounds the temporary arrays)
LOAD_BATCH = 20_000

#: a batch of analysed rows: (term ids, row in the batch, weighted count), sorted by (term, row),
#: and each row's token count
Postings = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Vocab:
    """One KB's terms → ids; ``words`` is for sources that cut words into terms (FTS5): word →
    term ids, so each word is cut once per KB."""

    def __init__(self) -> None:
        self.terms: dict[str, int] = {}
        self.words: dict[str, tuple[int, ...]] = {}

    def lookup(self, terms: Sequence[str]) -> list[int]:
        return [self.terms[t] for t in terms if t in self.terms]


class KeywordRows(Protocol):
    """What a store's table gives the index: its rows as terms, and a query's terms."""

    def estimate(self, session: Session, kb_id: str) -> int:
        """Bytes the KB's index will take (read before building it)."""
        ...

    def read(
        self, session: Session, kb_id: str, vocab: Vocab, pks: Sequence[int] | None = None
    ) -> Iterator[tuple[list[int], Postings]]:
        """The KB's rows (all, or those of ``pks`` still in the KB), in batches of at most
        :data:`LOAD_BATCH`: their pks and postings, terms numbered by ``vocab`` (which learns new ones)."""
        ...

    def query_terms(self, session: Session, query: str) -> list[str]:
        """Free text → the distinct terms to look up."""
        ...


@dataclass
class _KbTerms:
    """One KB's inverted index. ``main``: postings sorted by term (``indptr`` into ``docs`` rows and
    ``tfs`` weighted counts), built at load or merge; ``side``: rows added since, per term."""

    vocab: Vocab
    pks: np.ndarray  # row -> pk (int64); rows past the main index are side rows
    lengths: np.ndarray  # row -> token count (float32)
    alive: np.ndarray  # row -> still in the KB (bool)
    indptr: np.ndarray
    docs: np.ndarray
    tfs: np.ndarray
    df: np.ndarray  # term -> rows holding it (main + side; removed rows until the next merge)
    position: Any  # the change-log position (``Changes.head``) the index is at
    n: int  # rows in use (main + side)
    main_rows: int
    rows: dict[int, int] = field(default_factory=dict)  # pk -> live row
    side: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # term -> [(row, f)]
    dead: int = 0
    total_length: float = 0.0

    @property
    def nbytes(self) -> int:
        arrays = (self.pks, self.lengths, self.alive, self.indptr, self.docs, self.tfs, self.df)
        return int(sum(a.nbytes for a in arrays) + 80 * len(self.vocab.terms) + 64 * len(self.rows))

    @property
    def live(self) -> int:
        return self.n - self.dead


def _index(vocab: Vocab, pks: list[int], batches: list[Postings], position: Any) -> _KbTerms:
    """A main index from consecutive batches of postings (all rows alive)."""
    n = len(pks)
    offsets = np.cumsum([0] + [len(b[3]) for b in batches])
    terms = np.concatenate([b[0] for b in batches]) if batches else np.zeros(0, dtype=np.int64)
    docs = (
        np.concatenate([b[1] + offsets[i] for i, b in enumerate(batches)])
        if batches
        else np.zeros(0, dtype=np.int64)
    )
    tfs = np.concatenate([b[2] for b in batches]) if batches else np.zeros(0, dtype=np.float32)
    lengths = np.concatenate([b[3] for b in batches]) if batches else np.zeros(0, dtype=np.float32)
    if len(batches) > 1:  # each batch is sorted by (term, row), and rows grow from batch to batch
        order = np.argsort(terms, kind="stable")
        terms, docs, tfs = terms[order], docs[order], tfs[order]
    vocab_size = len(vocab.terms)
    df = np.bincount(terms, minlength=vocab_size).astype(np.int32)
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    return _KbTerms(
        vocab=vocab,
        pks=np.asarray(pks, dtype=np.int64),
        lengths=lengths.astype(np.float32),
        alive=np.ones(n, dtype=bool),
        indptr=indptr,
        docs=docs.astype(np.int32),
        tfs=tfs.astype(np.float32),
        df=df,
        position=position,
        n=n,
        main_rows=n,
        rows={int(p): i for i, p in enumerate(pks)},
        total_length=float(lengths.sum()),
    )


class KeywordCache(PerKbIndex[_KbTerms]):
    def __init__(
        self, changes: Changes, source: KeywordRows, max_bytes: int, *, background: bool = False
    ) -> None:
        super().__init__(changes, max_bytes, background=background)
        self.source = source

    def search(
        self, session: Session, kb_id: str, query: str, k: int, allowed: Allowed | None
    ) -> list[tuple[int, float]] | None:
        """The KB's ``k`` best BM25 matches (pk, score higher-is-better), best first; None when
        this KB is not indexed here (larger than the whole budget, or still being built): the
        caller asks SQL."""
        terms = self.source.query_terms(session, query)
        with self.searching(session, kb_id) as kb:  # scoring too: the index is updated in place
            return None if kb is None else self._score(kb, terms, k, allowed)

    # -- scoring -----------------------------------------------------------------------------
    @staticmethod
    def _score(kb: _KbTerms, terms: list[str], k: int, allowed: Allowed | None) -> list[tuple[int, float]]:
        ids = kb.vocab.lookup(terms)
        if not ids or kb.live == 0 or k <= 0:
            return []
        n_docs = kb.n
        avgdl = max(kb.total_length / kb.n if kb.n else 1.0, 1e-9)
        lengths = kb.lengths
        scores = np.zeros(n_docs, dtype=np.float64)
        for t in ids:  # only the rows holding a term are touched, not the KB
            n_hit = int(kb.df[t])
            idf = math.log((kb.n - n_hit + 0.5) / (n_hit + 0.5))
            idf = idf if idf > 0 else 1e-6
            parts = []
            if t < len(kb.indptr) - 1:
                lo, hi = int(kb.indptr[t]), int(kb.indptr[t + 1])
                if hi > lo:
                    parts.append((kb.docs[lo:hi], kb.tfs[lo:hi].astype(np.float64)))
            extra = kb.side.get(t)
            if extra:
                parts.append(
                    (
                        np.fromiter((r for r, _ in extra), dtype=np.int64, count=len(extra)),
                        np.fromiter((w for _, w in extra), dtype=np.float64, count=len(extra)),
                    )
                )
            for rows, f in parts:
                norm = K1 * (1.0 - B + B * lengths[rows] / avgdl)
                scores[rows] += idf * (f * (K1 + 1.0)) / (f + norm)
        hits = np.flatnonzero(scores)  # every score of a matching row is > 0 (IDF >= 1e-6)
        hits = hits[kb.alive[hits]]
        if allowed is not None and len(hits):
            hits = hits[allowed.mask(kb.pks[hits])]
        if not len(hits):
            return []
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        pks = kb.pks[hits]
        hits = hits[np.lexsort((pks, -scores[hits]))]  # best first; ties by pk
        return [(int(kb.pks[i]), float(scores[i])) for i in hits]

    # -- keeping in step with the database ----------------------------------------------------
    def _position(self, kb: _KbTerms) -> Any:
        return kb.position

    def _nbytes(self, kb: _KbTerms) -> int:
        return kb.nbytes

    def _estimate(self, session: Session, kb_id: str) -> int:
        return self.source.estimate(session, kb_id)

    def _build(self, session: Session, kb_id: str, head: Any) -> _KbTerms:
        vocab = Vocab()
        pks: list[int] = []
        batches: list[Postings] = []
        for part, postings in self.source.read(session, kb_id, vocab):
            pks.extend(part)
            batches.append(postings)
        return _index(vocab, pks, batches, head)

    def _apply(self, session: Session, kb_id: str, kb: _KbTerms, head: Any) -> _KbTerms | None:
        """Bring ``kb`` up to ``head``; None when it must be reloaded."""
        pks = self.changes.since(session, kb_id, kb.position, head)
        if pks is None:
            return None
        for pk in pks:  # removed or replaced: mask the old row
            row = kb.rows.pop(pk, None)
            if row is not None:
                kb.alive[row] = False
                kb.dead += 1
        if pks:  # the rows still in the KB, analysed as a build analyses them
            for part, (terms, rows, tfs, lengths) in self.source.read(session, kb_id, kb.vocab, sorted(pks)):
                counts: list[dict[int, float]] = [{} for _ in part]
                for term, row, f in zip(terms.tolist(), rows.tolist(), tfs.tolist(), strict=True):
                    counts[row][term] = f
                for j, pk in enumerate(part):
                    self._add_side(kb, pk, counts[j], float(lengths[j]))
        kb.position = head
        if kb.dead + (kb.n - kb.main_rows) >= max(MERGE_MIN, MERGE_FRACTION * kb.main_rows):
            return self._merged(kb)
        return kb

    @staticmethod
    def _add_side(kb: _KbTerms, pk: int, counts: dict[int, float], length: float) -> None:
        row = kb.n
        if row >= len(kb.pks):  # grow the per-row arrays
            capacity = max(row + 1, int(len(kb.pks) * 1.5) + 64)
            kb.pks = np.resize(kb.pks, capacity)
            kb.lengths = np.resize(kb.lengths, capacity)
            kb.alive = np.resize(kb.alive, capacity)
        kb.pks[row], kb.lengths[row], kb.alive[row] = pk, length, True
        if len(kb.vocab.terms) > len(kb.df):
            kb.df = np.concatenate([kb.df, np.zeros(len(kb.vocab.terms) - len(kb.df), dtype=np.int32)])
        for term, f in counts.items():
            kb.side.setdefault(term, []).append((row, f))
            kb.df[term] += 1
        kb.rows[pk] = row
        kb.total_length += length
        kb.n += 1

    @staticmethod
    def _merged(kb: _KbTerms) -> _KbTerms:
        """A new main index of the live rows (main and side), without re-reading anything."""
        per_row: dict[int, dict[int, float]] = {}
        alive = kb.alive
        live_main = np.flatnonzero(alive[: kb.main_rows])
        keep = alive[kb.docs]
        docs, tfs = kb.docs[keep], kb.tfs[keep]
        terms = np.repeat(np.arange(len(kb.indptr) - 1, dtype=np.int32), np.diff(kb.indptr))[keep]
        for term, postings in kb.side.items():
            for row, f in postings:
                if alive[row]:
                    per_row.setdefault(row, {})[term] = f
        side_rows = sorted(per_row)
        old_rows = np.concatenate([live_main, np.asarray(side_rows, dtype=np.int64)])
        renumber = np.full(kb.n, -1, dtype=np.int64)
        renumber[old_rows] = np.arange(len(old_rows))
        side_terms = [t for r in side_rows for t in per_row[r]]
        side_docs = [r for r in side_rows for _ in per_row[r]]
        side_tfs = [f for r in side_rows for f in per_row[r].values()]
        all_terms = np.concatenate([terms, np.asarray(side_terms, dtype=np.int32)])
        all_docs = renumber[np.concatenate([docs.astype(np.int64), np.asarray(side_docs, dtype=np.int64)])]
        all_tfs = np.concatenate([tfs, np.asarray(side_tfs, dtype=np.float32)])
        order = np.lexsort((all_docs, all_terms))
        all_terms, all_docs, all_tfs = all_terms[order], all_docs[order].astype(np.int32), all_tfs[order]
        vocab_size = len(kb.vocab.terms)
        df = np.bincount(all_terms, minlength=vocab_size).astype(np.int32)
        indptr = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        pks = kb.pks[old_rows]
        lengths = kb.lengths[old_rows]
        n = len(old_rows)
        return _KbTerms(
            vocab=kb.vocab,
            pks=pks,
            lengths=lengths,
            alive=np.ones(n, dtype=bool),
            indptr=indptr,
            docs=all_docs,
            tfs=all_tfs,
            df=df,
            position=kb.position,
            n=n,
            main_rows=n,
            rows={int(p): i for i, p in enumerate(pks.tolist())},
            total_length=float(lengths.sum()),
        )
