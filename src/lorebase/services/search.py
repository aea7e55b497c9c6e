"""Search: vector, keyword (BM25) and hybrid (reciprocal-rank fusion), with metadata filters.

``retrieve`` is the pure ranking used by the API, the CLI and ``lorebase eval``; ``search``
adds the query log. Filters match document fields (``document_id``, ``external_id``,
``source_type``, ``filename``, ``media_type``) or document metadata keys (``metadata.<key>`` or a
bare key); a list value means "any of".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from lorebase.db.models import Chunk, Document, KnowledgeBase, QueryLog, utcnow
from lorebase.errors import InvalidInput, NotFound
from lorebase.services.auth import Principal
from lorebase.services.kbs import load as load_kb

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

Mode = Literal["hybrid", "vector", "keyword"]
MODES = ("hybrid", "vector", "keyword")
RRF_K = 60
DOC_FIELDS = {
    "document_id": Document.id,
    "external_id": Document.external_id,
    "source_type": Document.source_type,
    "filename": Document.filename,
    "media_type": Document.media_type,
}


@dataclass(slots=True)
class Ranked:
    pk: int
    score: float


def _filter_clauses(filters: dict[str, Any], dialect: str = "sqlite") -> list[Any]:
    clauses = []
    for key, value in filters.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise InvalidInput(f"filter {key!r} has an empty list")
        if key in DOC_FIELDS:
            clauses.append(DOC_FIELDS[key].in_([str(v) for v in values]))
            continue
        name = key.removeprefix("metadata.")
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise InvalidInput(f"unsupported filter key {key!r}")
        field = Document.meta[name]
        sample = values[0]
        if dialect == "postgresql" and isinstance(sample, bool | int | float | str):
            # JSONB to JSONB: casting the field (``as_float()``...) would raise on a document whose
            # value has another type, where SQLite just finds no match; jsonb numbers compare by value
            clauses.append(field.in_([literal(v, JSONB) for v in values]))
        elif isinstance(sample, bool):
            clauses.append(field.as_boolean().in_(values))
        elif isinstance(sample, int | float):
            clauses.append(field.as_float().in_([float(v) for v in values]))
        elif isinstance(sample, str):
            clauses.append(field.as_string().in_(values))
        else:
            raise InvalidInput(f"filter {key!r}: values must be strings, numbers or booleans")
    return clauses


def _allowed(s: Session, kb_id: str, filters: dict[str, Any] | None) -> list[int] | None:
    if not filters:
        return None
    q = (
        select(Chunk.pk)
        .join(Document, Document.id == Chunk.document_id)
        .where(
            Chunk.kb_id == kb_id,
            Chunk.embedded.is_(True),
            *_filter_clauses(filters, s.get_bind().dialect.name),
        )
    )
    return list(s.execute(q).scalars())


def fuse(lists: list[list[Ranked]], k: int = RRF_K) -> list[Ranked]:
    """Reciprocal-rank fusion: each list adds 1/(k + rank); robust to incomparable score scales."""
    scores: dict[int, float] = {}
    for ranked in lists:
        for rank, hit in enumerate(ranked, start=1):
            scores[hit.pk] = scores.get(hit.pk, 0.0) + 1.0 / (k + rank)
    return [Ranked(pk, sc) for pk, sc in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def retrieve(
    runtime: Runtime,
    s: Session,
    kb: KnowledgeBase,
    query: str,
    *,
    mode: Mode = "hybrid",
    top_k: int = 10,
    filters: dict[str, Any] | None = None,
    candidates: int | None = None,
) -> list[Ranked]:
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}")
    if not query.strip():
        raise InvalidInput("query must not be empty")
    store = runtime.kb_store(kb.config)
    allowed = _allowed(s, kb.id, filters)
    depth = max(top_k, candidates or 0, 50 if mode == "hybrid" else 0)
    lists: list[list[Ranked]] = []
    if mode in ("vector", "hybrid"):
        vector = runtime.query_embedder(kb.config["embedding"]["model"]).embed([query])[0]
        lists.append([Ranked(h.pk, h.score) for h in store.vector_search(s, kb.id, vector, depth, allowed)])
    if mode in ("keyword", "hybrid"):
        lists.append([Ranked(h.pk, h.score) for h in store.keyword_search(s, kb.id, query, depth, allowed)])
    ranked = lists[0] if len(lists) == 1 else fuse(lists)
    return ranked[:top_k]


def hydrate(s: Session, ranked: list[Ranked]) -> list[dict[str, Any]]:
    if not ranked:
        return []
    rows = s.execute(
        select(Chunk, Document)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.pk.in_([r.pk for r in ranked]))
    ).all()
    by_pk = {c.pk: (c, d) for c, d in rows}
    out = []
    for r in ranked:
        if r.pk not in by_pk:  # deleted between ranking and reading
            continue
        c, d = by_pk[r.pk]
        out.append(
            {
                "chunk_id": c.id,
                "document_id": d.id,
                "external_id": d.external_id,
                "title": d.title,
                "url": d.source_url,
                "filename": d.filename,
                "section": c.meta.get("section") or [],
                "text": c.content,
                "score": round(r.score, 6),
                "metadata": {**(d.meta or {}), **c.meta, "chunk_index": c.chunk_index},
            }
        )
    return out


def search(
    runtime: Runtime,
    p: Principal,
    kb_id: str,
    query: str,
    *,
    mode: Mode = "hybrid",
    top_k: int = 10,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    with runtime.db.read_session() as s:
        kb = load_kb(s, p, kb_id)
        results = hydrate(s, retrieve(runtime, s, kb, query, mode=mode, top_k=top_k, filters=filters))
    latency = (time.perf_counter() - started) * 1000
    with runtime.db.session() as s:
        log = QueryLog(
            kb_id=kb_id,
            workspace_id=p.workspace_id,
            query=query,
            mode=mode,
            top_k=top_k,
            filters=filters or {},
            result_chunk_ids=[r["chunk_id"] for r in results],
            latency_ms=round(latency, 2),
        )
        s.add(log)
        s.flush()
        query_id = log.id
    return {
        "query_id": query_id,
        "query": query,
        "mode": mode,
        "latency_ms": round(latency, 2),
        "results": results,
    }


def feedback(
    runtime: Runtime, p: Principal, query_id: str, value: str, comment: str | None
) -> dict[str, Any]:
    if value not in ("positive", "negative", "neutral"):
        raise InvalidInput("feedback must be positive, negative or neutral")
    with runtime.db.session() as s:
        n = s.execute(
            update(QueryLog)
            .where(QueryLog.id == query_id, QueryLog.workspace_id == p.workspace_id)
            .values(feedback=value, comment=comment, feedback_at=utcnow())
        ).rowcount  # type: ignore[attr-defined]
    if not n:
        raise NotFound(f"query {query_id} not found")
    return {"query_id": query_id, "feedback": value, "comment": comment}
