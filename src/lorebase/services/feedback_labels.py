"""Labels from the query log: what people's feedback on searches says is relevant.

The rule (``POST /kbs/{id}/evaluations`` with ``from_feedback: true``):

- Rated searches of the same text (trimmed, whitespace collapsed, case-folded) are one query;
  its id is the query log id of its latest rated search, its text that search's.
- A **positive** rating judges each document among the first :data:`FEEDBACK_DEPTH` results
  that search answered with relevant, grade 1. A rating is of the answer as a whole: which hit
  helped is not known, so no position gets more weight than another.
- A **negative** rating judges those documents non-relevant (grade 0).
- The latest judgement of a (query, document) pair wins: a document liked once and then shown
  in an answer rated negative is non-relevant.
- Neutral ratings and unrated searches say nothing and are not read.
- A query left with no relevant document (rated only negatively) cannot be scored by nDCG,
  recall or MRR (every ranking would score 0): it is left out, and counted in the evaluation's
  ``skipped_queries``. Results whose chunks no longer exist (a deleted document) are dropped.

So an evaluation from feedback asks: does this version still find what people were glad to be
shown, and does it rank it first? It cannot reward finding better documents nobody was shown.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lorebase.db.models import Chunk, Document, KnowledgeBase, QueryLog
from lorebase.errors import InvalidInput

#: results of a rated search that its rating judges
FEEDBACK_DEPTH = 10
#: newest rated searches read
MAX_ROWS = 50_000
RULE = (
    "positive: the documents of the first 10 logged results are relevant (grade 1); negative: "
    "they are not (grade 0); the latest judgement of a document wins; queries with no relevant "
    "document are left out (skipped_queries)"
)


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def feedback_labels(
    s: Session, kb: KnowledgeBase, *, max_queries: int
) -> tuple[list[tuple[str, str]], dict[str, dict[str, int]], dict[str, Any]]:
    """(queries as (id, text), qrels, a summary of what was read) from the KB's rated searches:
    the newest ``max_queries`` query texts. InvalidInput when nobody rated a search."""
    rated_at = func.coalesce(QueryLog.feedback_at, QueryLog.created_at)
    rows = s.execute(
        select(QueryLog.id, QueryLog.query, QueryLog.feedback, QueryLog.result_chunk_ids)
        .where(QueryLog.kb_id == kb.id, QueryLog.feedback.in_(("positive", "negative")))
        .order_by(rated_at.desc(), QueryLog.id.desc())
        .limit(MAX_ROWS)
    ).all()
    if not rows:
        raise InvalidInput(
            "no feedback to evaluate: no search of this knowledge base was rated positive or negative",
            details={"feedback": "POST /api/v1/queries/{id}/feedback"},
        )
    groups: dict[str, list[Any]] = {}  # newest group first, each newest row first
    for row in rows:
        key = normalise(row.query)
        if key in groups or len(groups) < max_queries:
            groups.setdefault(key, []).append(row)
    doc_of = _documents(s, [c for g in groups.values() for r in g for c in _judged(r)])
    queries: list[tuple[str, str]] = []
    qrels: dict[str, dict[str, int]] = {}
    for group in groups.values():
        latest = group[0]
        grades: dict[str, int] = {}
        for row in reversed(group):  # oldest first: the latest judgement wins
            for chunk_id in _judged(row):
                if (doc := doc_of.get(chunk_id)) is not None:
                    grades[doc] = 1 if row.feedback == "positive" else 0
        queries.append((latest.id, latest.query))
        qrels[latest.id] = grades
    summary = {
        "rule": RULE,
        "rated_searches": len(rows),
        "positive": sum(r.feedback == "positive" for r in rows),
        "negative": sum(r.feedback == "negative" for r in rows),
    }
    return queries, qrels, summary


def _judged(row: Any) -> list[str]:
    return [str(c) for c in (row.result_chunk_ids or [])[:FEEDBACK_DEPTH]]


def _documents(s: Session, chunk_ids: list[str]) -> dict[str, str]:
    """chunk id → its document's key (``external_id``, else the document's id), as
    ``evaluations.document_keys`` maps a ranking."""
    out: dict[str, str] = {}
    unique = list(dict.fromkeys(chunk_ids))
    for i in range(0, len(unique), 500):
        for chunk_id, ext, doc_id in s.execute(
            select(Chunk.id, Document.external_id, Document.id)
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.id.in_(unique[i : i + 500]))
        ):
            out[chunk_id] = ext if ext is not None else doc_id
    return out
