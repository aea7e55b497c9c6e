"""The pgvector store's rows for its in-memory keyword index (``keyword_cache.py``): the lexemes of
each row's ``tsvector`` with their weights, and a query's lexemes from PostgreSQL's own parser.

Terms are what PostgreSQL made of the text when it was written (``to_tsvector`` with the store's
text search configuration, ``english``: Snowball stems, stop words dropped), so the index needs no
copy of the text, works on tables written before it existed, and agrees with the SQL path
(``ts_rank_cd``) on what matches. A query goes through the same ``to_tsvector`` (one round trip).

Per row and lexeme, the weighted count is 1.0 per occurrence labelled ``A`` (content), 0.5 per
``B`` (title), 0.3 per ``C`` (section) (``keyword_cache.WEIGHTS``, the labels the store's
``upsert`` gives the parts), and the row's length is its number of positions. A ``tsvector`` keeps
at most 256 positions per lexeme (chunks are far shorter), so counts are exact for chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from lorebase.adapters.stores.keyword_cache import LOAD_BATCH, WEIGHTS, Postings, Vocab

#: the weight label of content, title and section in the store's tsvector (``pgvector.upsert``)
LABELS = ("A", "B", "C")
#: bytes of index per posting (row, lexeme) and per row, for the memory estimate before a load
#: (measured on the Scale corpus)
BYTES_PER_POSTING, BYTES_PER_ROW = 10, 100

_WEIGHTED = " + ".join(
    f"{w} * cardinality(array_positions(x.weights, '{label}'))"
    for w, label in zip(WEIGHTS, LABELS, strict=True)
)


class TsvectorRows:
    def __init__(self, table: str, config: str, words: Callable[[str], list[str]]) -> None:
        """``table``: the store's table (``pk``, ``kb_id``, ``tsv``); ``config``: its text search
        configuration; ``words``: free text → the words a query asks for (the store's)."""
        self.table, self.config, self.words = table, config, words
        self._select = (
            "SELECT t.pk, u.lexemes, u.counts, u.length "
            f"FROM {table} AS t CROSS JOIN LATERAL ("
            f"  SELECT array_agg(x.lexeme) AS lexemes, array_agg(CAST({_WEIGHTED} AS real)) AS counts,"
            "   sum(cardinality(x.positions)) AS length FROM unnest(t.tsv) AS x) AS u "
            "WHERE t.kb_id = :kb"
        )

    def estimate(self, session: Session, kb_id: str) -> int:
        postings, rows = session.execute(
            text(f"SELECT coalesce(sum(length(tsv)), 0), count(*) FROM {self.table} WHERE kb_id = :kb"),
            {"kb": kb_id},
        ).one()
        return int(postings) * BYTES_PER_POSTING + int(rows) * BYTES_PER_ROW

    def read(
        self, session: Session, kb_id: str, vocab: Vocab, pks: Sequence[int] | None = None
    ) -> Iterator[tuple[list[int], Postings]]:
        query = self._select
        params: dict[str, Any] = {"kb": kb_id}
        if pks is not None:
            query += " AND t.pk = ANY(CAST(:pks AS bigint[]))"
            params["pks"] = [int(p) for p in pks]
        # a server-side cursor: a large KB is never held as rows in full
        result = session.execute(text(query).execution_options(yield_per=LOAD_BATCH), params)
        for part in result.partitions():
            yield [int(r[0]) for r in part], _postings(vocab, part)

    def query_terms(self, session: Session, query: str) -> list[str]:
        words = self.words(query)
        if not words:
            return []
        lexemes = session.execute(
            text("SELECT tsvector_to_array(to_tsvector(CAST(:cfg AS regconfig), :q))"),
            {"cfg": self.config, "q": " ".join(words)},
        ).scalar_one()
        return list(lexemes or ())


def _postings(vocab: Vocab, rows: Sequence[Any]) -> Postings:
    """Rows ``(pk, lexemes, counts, length)`` → postings numbered ``0, 1, ...`` (see ``Postings``)."""
    ids = vocab.terms
    terms: list[int] = []
    tfs: list[float] = []
    per_row = np.zeros(len(rows), dtype=np.int64)
    lengths = np.zeros(len(rows), dtype=np.float32)
    for i, (_, lexemes, counts, length) in enumerate(rows):
        if not lexemes:  # an empty tsvector (no words, or only stop words)
            continue
        terms.extend([ids.setdefault(lexeme, len(ids)) for lexeme in lexemes])
        tfs.extend(counts)
        per_row[i] = len(lexemes)
        lengths[i] = length
    term_ids = np.asarray(terms, dtype=np.int64)
    row_ids = np.repeat(np.arange(len(rows), dtype=np.int64), per_row)
    order = np.argsort(term_ids, kind="stable")  # rows ascend already: sorted by (term, row)
    return term_ids[order], row_ids[order], np.asarray(tfs, dtype=np.float32)[order], lengths
