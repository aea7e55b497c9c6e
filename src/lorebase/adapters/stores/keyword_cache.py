"""Keyword search for the sqlite store from a per-KB inverted index held in memory, kept in step
with the SQLite file through the store's change log (``change_log.py``).

FTS5 ranks a query by computing BM25 for *every* row that holds any of its terms, in every KB of
the table (``kb_id`` is a column it cannot index), then sorts them: 45-75 ms at 100k chunks on
the 2-core machines, most of a hybrid search (``benchmarks/README.md``, Scale). The same BM25 over
a KB's own postings, as a few numpy operations per query term, takes ~1.5 ms, and only the KB's
rows are ever touched.

**What it computes is FTS5's ranking.** Terms are the FTS5 table's: each distinct word is cut and
stemmed by FTS5's own tokenizer (``terms.FTS5_TERMS``). The score is FTS5's ``bm25()`` with the
store's column weights (content 1.0, title 0.5, section 0.3): per term, IDF ``log((N - n + 0.5) / (n + 0.5))``
(at least 1e-6) times ``f (k1 + 1) / (f + k1 (1 - b + b D / avgdl))``, where ``f`` is the weighted
count of the term in the row and ``D`` the row's token count over the three columns. Two
differences, both deliberate: ``N``, ``n`` and ``avgdl`` are the KB's, not the whole table's (a KB's
ranking no longer depends on other tenants' texts); and a query word that FTS5 would cut into
several tokens (``foo_bar``, ``e-mail``) asks for each of them, not for the phrase.

**The SQLite file stays the truth.** A KB is read from ``chunks_fts`` on its first keyword search
in a process; after that each search reads the change log and re-reads only the rows that
changed. Rows added since the last build are kept in a small side index, and rows removed or
replaced are masked; when those reach :data:`MERGE_FRACTION` of the KB, the index is rebuilt
from what it holds (no re-read). Until then, ``n`` and ``avgdl`` still count the removed rows,
a negligible drift that the rebuild clears.

Indexes are built (in ``serve``, in the background while FTS5 answers) and evicted (least recently
used beyond ``max_bytes``, ``LOREBASE_KEYWORD_CACHE_MB``) as ``memory_index.py`` says; a KB larger
than the whole budget is searched by FTS5 as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from lorebase.adapters.stores.filters import Allowed
from lorebase.adapters.stores.memory_index import PerKbIndex
from lorebase.adapters.stores.terms import FTS5_TERMS, fts5_query_terms, fts5_words

#: BM25 parameters (FTS5's)
K1, B = 1.2, 0.75
#: weight of a term occurrence in content, title and section (the store's FTS5 ``rank``)
WEIGHTS = (1.0, 0.5, 0.3)
#: rebuild the main index when added + removed rows since the last build reach this share of it
MERGE_FRACTION = 0.1
#: ... or this many rows, for small KBs
MERGE_MIN = 512
#: bytes per stored posting, for the memory estimate before a load (doc int32 + weight float32,
#: plus the vocabulary and per-row arrays, measured on the Scale corpus)
BYTES_PER_CHAR = 1.2


class _Vocab:
    """Word → term ids, for one KB (FTS5 is asked once per new word, then it is a look-up)."""

    def __init__(self) -> None:
        self.terms: dict[str, int] = {}
        self.words: dict[str, tuple[int, ...]] = {}

    def learn(self, words: Iterable[str]) -> None:
        missing = [w for w in words if w not in self.words]
        if missing:
            terms = FTS5_TERMS.of(missing)
            for w in missing:
                self.words[w] = tuple(self.terms.setdefault(t, len(self.terms)) for t in terms[w])

    def lookup(self, terms: Sequence[str]) -> list[int]:
        return [self.terms[t] for t in terms if t in self.terms]


@dataclass
class _KbTerms:
    """One KB's inverted index. ``main``: postings sorted by term (``indptr`` into ``docs`` rows and
    ``tfs`` weighted counts), built at load or merge; ``side``: rows added since, per term."""

    vocab: _Vocab
    pks: np.ndarray  # row -> pk (int64); rows past the main index are side rows
    lengths: np.ndarray  # row -> token count (float32)
    alive: np.ndarray  # row -> still in the KB (bool)
    indptr: np.ndarray
    docs: np.ndarray
    tfs: np.ndarray
    df: np.ndarray  # term -> rows holding it (main + side; removed rows until the next merge)
    seq: int
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


#: rows analysed together when a KB is loaded (bounds the temporary arrays)
LOAD_BATCH = 20_000


def _postings(vocab: _Vocab, rows: list[tuple[str, str, str]], first: int) -> tuple[np.ndarray, ...]:
    """Rows ``first, first + 1, ...`` → (terms, rows, weighted counts) sorted by (term, row), and
    each row's token count: the words of a whole batch are looked up at once, counted by numpy."""
    n = len(rows)
    keys: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    lengths = np.zeros(n, dtype=np.float32)
    for column, weight in enumerate(WEIGHTS):
        cut = [fts5_words(r[column] or "") for r in rows]
        flat = list(chain.from_iterable(cut))
        if not flat:
            continue
        vocab.learn(set(flat))
        known = vocab.words
        per_word = [known[w] for w in flat]
        terms = np.fromiter(chain.from_iterable(per_word), dtype=np.int64)
        word_rows = np.repeat(
            np.arange(n, dtype=np.int64), np.fromiter(map(len, cut), dtype=np.int64, count=n)
        )
        term_rows = np.repeat(word_rows, np.fromiter(map(len, per_word), dtype=np.int64, count=len(flat)))
        lengths += np.bincount(term_rows, minlength=n).astype(np.float32)
        keys.append(terms * n + term_rows)
        weights.append(np.full(len(terms), weight, dtype=np.float32))
    if not keys:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32), lengths
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    tfs = np.bincount(inverse, weights=np.concatenate(weights)).astype(np.float32)
    return unique // n, unique % n + first, tfs, lengths


def _index(vocab: _Vocab, pks: list[int], batches: list[tuple[np.ndarray, ...]], seq: int) -> _KbTerms:
    """A main index from batches of :func:`_postings` (all rows alive)."""
    n = len(pks)
    terms = np.concatenate([b[0] for b in batches]) if batches else np.zeros(0, dtype=np.int64)
    docs = np.concatenate([b[1] for b in batches]) if batches else np.zeros(0, dtype=np.int64)
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
        lengths=lengths,
        alive=np.ones(n, dtype=bool),
        indptr=indptr,
        docs=docs.astype(np.int32),
        tfs=tfs,
        df=df,
        seq=seq,
        n=n,
        main_rows=n,
        rows={int(p): i for i, p in enumerate(pks)},
        total_length=float(lengths.sum()),
    )


class KeywordCache(PerKbIndex[_KbTerms]):
    def search(
        self, session: Session, kb_id: str, query: str, k: int, allowed: Allowed | None
    ) -> list[tuple[int, float]] | None:
        """The KB's ``k`` best BM25 matches (pk, score higher-is-better), best first; None when
        this KB is not indexed here (larger than the whole budget, or still being built): the
        caller asks FTS5."""
        terms = fts5_query_terms(query)
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

    # -- keeping in step with the file -------------------------------------------------------
    def _seq(self, kb: _KbTerms) -> int:
        return kb.seq

    def _nbytes(self, kb: _KbTerms) -> int:
        return kb.nbytes

    def _estimate(self, session: Session, kb_id: str) -> int:
        chars = session.execute(
            text(
                "SELECT coalesce(sum(length(content) + length(title) + length(section)), 0) "
                "FROM chunks_fts WHERE kb_id = :kb"
            ),
            {"kb": kb_id},
        ).scalar()
        return int(int(chars or 0) * BYTES_PER_CHAR)

    def _build(self, session: Session, kb_id: str, head: int) -> _KbTerms:
        vocab = _Vocab()
        pks: list[int] = []
        batches: list[tuple[np.ndarray, ...]] = []
        pending: list[tuple[str, str, str]] = []
        for rowid, content, title, section in session.execute(
            text("SELECT rowid, content, title, section FROM chunks_fts WHERE kb_id = :kb"),
            {"kb": kb_id},
        ):
            pks.append(int(rowid))
            pending.append((content, title, section))
            if len(pending) == LOAD_BATCH:
                batches.append(_postings(vocab, pending, len(pks) - len(pending)))
                pending = []
        if pending:
            batches.append(_postings(vocab, pending, len(pks) - len(pending)))
        return _index(vocab, pks, batches, head)

    def _apply(self, session: Session, kb_id: str, kb: _KbTerms, head: int) -> _KbTerms | None:
        """Bring ``kb`` up to ``head``; None when it must be reloaded."""
        pks = self.changes.since(session, kb_id, kb.seq, head)
        if pks is None:
            return None
        for pk in pks:  # removed or replaced: mask the old row
            row = kb.rows.pop(pk, None)
            if row is not None:
                kb.alive[row] = False
                kb.dead += 1
        ordered = sorted(pks)
        for i in range(0, len(ordered), 500):
            marks = ",".join(str(p) for p in ordered[i : i + 500])
            found = session.execute(
                text(
                    "SELECT rowid, content, title, section FROM chunks_fts "
                    f"WHERE rowid IN ({marks}) AND kb_id = :kb"
                ),
                {"kb": kb_id},
            ).all()
            if not found:
                continue
            # analysed as a build analyses rows (one home for terms, weights and lengths)
            terms, rows, tfs, lengths = _postings(kb.vocab, [(r[1], r[2], r[3]) for r in found], 0)
            counts: list[dict[int, float]] = [{} for _ in found]
            for term, row, f in zip(terms.tolist(), rows.tolist(), tfs.tolist(), strict=True):
                counts[row][term] = f
            for j, r in enumerate(found):
                self._add_side(kb, int(r[0]), counts[j], float(lengths[j]))
        kb.seq = head
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
            seq=kb.seq,
            n=n,
            main_rows=n,
            rows={int(p): i for i, p in enumerate(pks.tolist())},
            total_length=float(lengths.sum()),
        )
