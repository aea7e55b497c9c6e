"""The sqlite store's rows for its in-memory keyword index (``keyword_cache.py``): read from the
``chunks_fts`` FTS5 table and cut into FTS5's own terms.

Each distinct word is cut and stemmed by FTS5's tokenizer itself (``terms.FTS5_TERMS``, asked
once per word per process), so the index in memory and the FTS5 table never disagree on a term,
and the in-memory BM25 equals FTS5's ``bm25()`` on a single-KB table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from lorebase.adapters.stores.keyword_cache import LOAD_BATCH, WEIGHTS, Postings, Vocab
from lorebase.adapters.stores.terms import FTS5_TERMS, fts5_query_terms, fts5_words

#: bytes of index per character of text, for the memory estimate before a load (postings,
#: vocabulary and per-row arrays, measured on the Scale corpus)
BYTES_PER_CHAR = 1.2


class Fts5Rows:
    def estimate(self, session: Session, kb_id: str) -> int:
        chars = session.execute(
            text(
                "SELECT coalesce(sum(length(content) + length(title) + length(section)), 0) "
                "FROM chunks_fts WHERE kb_id = :kb"
            ),
            {"kb": kb_id},
        ).scalar()
        return int(int(chars or 0) * BYTES_PER_CHAR)

    def read(
        self, session: Session, kb_id: str, vocab: Vocab, pks: Sequence[int] | None = None
    ) -> Iterator[tuple[list[int], Postings]]:
        if pks is None:
            yield from self._batches(
                vocab,
                session.execute(
                    text("SELECT rowid, content, title, section FROM chunks_fts WHERE kb_id = :kb"),
                    {"kb": kb_id},
                ),
            )
            return
        for i in range(0, len(pks), 500):
            marks = ",".join(str(int(p)) for p in pks[i : i + 500])
            yield from self._batches(
                vocab,
                session.execute(
                    text(
                        "SELECT rowid, content, title, section FROM chunks_fts "
                        f"WHERE rowid IN ({marks}) AND kb_id = :kb"
                    ),
                    {"kb": kb_id},
                ),
            )

    def query_terms(self, session: Session, query: str) -> list[str]:
        return fts5_query_terms(query)

    @staticmethod
    def _batches(vocab: Vocab, found: Iterable[Any]) -> Iterator[tuple[list[int], Postings]]:
        pks: list[int] = []
        pending: list[tuple[str, str, str]] = []
        for rowid, content, title, section in found:
            pks.append(int(rowid))
            pending.append((str(content or ""), str(title or ""), str(section or "")))
            if len(pending) == LOAD_BATCH:
                yield pks, _postings(vocab, pending)
                pks, pending = [], []
        if pending:
            yield pks, _postings(vocab, pending)


def _learn(vocab: Vocab, words: Iterable[str]) -> None:
    """Give ``vocab`` the term ids of words it has not seen (FTS5 is asked once per new word)."""
    missing = [w for w in words if w not in vocab.words]
    if missing:
        terms = FTS5_TERMS.of(missing)
        for w in missing:
            vocab.words[w] = tuple(vocab.terms.setdefault(t, len(vocab.terms)) for t in terms[w])


def _postings(vocab: Vocab, rows: list[tuple[str, str, str]]) -> Postings:
    """Rows ``0, 1, ...`` → (terms, rows, weighted counts) sorted by (term, row), and each row's
    token count: the words of a whole batch are looked up at once, counted by numpy."""
    n = len(rows)
    keys: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    lengths = np.zeros(n, dtype=np.float32)
    for column, weight in enumerate(WEIGHTS):
        cut = [fts5_words(r[column]) for r in rows]
        flat = list(chain.from_iterable(cut))
        if not flat:
            continue
        _learn(vocab, set(flat))
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
    return unique // n, unique % n, tfs, lengths
