"""What an evaluation request may ask (``services/evaluations.py``): the same rules for the API,
``new_evaluation`` and version activation, each broken rule an InvalidInput (422) with details."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorebase.db.models import KbVersion, KnowledgeBase
from lorebase.db.states import VersionStatus
from lorebase.errors import Conflict, InvalidInput, NotFound
from lorebase.services.feedback_labels import feedback_labels
from lorebase.services.search import MODES, searched_version

#: most queries one evaluation may hold
MAX_QUERIES = 10_000
#: most versions one evaluation may compare
MAX_VERSIONS = 5
MAX_QUERY_CHARS = 4_000  # as a search's query (api/schemas/requests.py)


def has_relevant(rels: dict[str, int]) -> bool:
    return any(g > 0 for g in rels.values())


def scorable(
    queries: list[tuple[str, str]], qrels: dict[str, dict[str, int]]
) -> tuple[list[tuple[str, str]], int]:
    """(the queries that have a relevant document, how many were left out)."""
    kept = [(qid, text) for qid, text in queries if has_relevant(qrels.get(qid, {}))]
    return kept, len(queries) - len(kept)


def validate(
    s: Session, kb: KnowledgeBase, request: dict[str, Any], *, accept_building: bool = False
) -> dict[str, Any]:
    """The request as stored: labelled queries (from the body or the query log), versions (None:
    the live one when the job starts), modes. Raises InvalidInput (422) with details."""
    allowed = {"queries", "qrels", "from_feedback", "versions", "modes"}
    if unknown := sorted(set(request) - allowed):
        raise InvalidInput("unknown fields in the evaluation request", details={"fields": unknown})
    if request.get("from_feedback"):
        if request.get("queries") or request.get("qrels"):
            raise InvalidInput("give either queries and qrels, or from_feedback: true, not both")
        queries, qrels, rule = feedback_labels(s, kb, max_queries=MAX_QUERIES)
    else:
        queries = _queries(request.get("queries"))
        qrels = _qrels(request.get("qrels"), {qid for qid, _ in queries})
        rule = None
    kept, skipped = scorable(queries, qrels)
    if not kept:
        raise InvalidInput(
            "no query has a relevant document (a grade above 0) in the qrels: nothing can be scored"
        )
    out: dict[str, Any] = {
        "queries": [{"id": qid, "text": text} for qid, text in kept],
        "qrels": {qid: qrels[qid] for qid, _ in kept},
        "skipped_queries": skipped,
        "from_feedback": bool(request.get("from_feedback")),
        "modes": _modes(request.get("modes")),
        "versions": _versions(s, kb, request.get("versions"), accept_building=accept_building),
    }
    if rule is not None:
        out["feedback"] = rule
    return out


def _queries(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        raise InvalidInput("queries must be a non-empty list of {id, text} (or ask from_feedback: true)")
    if len(value) > MAX_QUERIES:
        raise InvalidInput(
            f"too many queries: {len(value)}; at most {MAX_QUERIES} per evaluation",
            details={"max_queries": MAX_QUERIES},
        )
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, q in enumerate(value):
        qid = q.get("id") if isinstance(q, dict) else None
        text = q.get("text") if isinstance(q, dict) else None
        if not isinstance(qid, str | int) or isinstance(qid, bool) or not str(qid).strip():
            raise InvalidInput(f"queries[{i}]: id must be a non-empty string", details={"index": i})
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_QUERY_CHARS:
            raise InvalidInput(
                f"queries[{i}]: text must be a non-empty string of at most {MAX_QUERY_CHARS} characters",
                details={"index": i, "id": str(qid)},
            )
        if str(qid) in seen:
            raise InvalidInput(f"queries[{i}]: id {qid!r} appears twice", details={"id": str(qid)})
        seen.add(str(qid))
        out.append((str(qid), text))
    return out


def _qrels(value: Any, known: set[str]) -> dict[str, dict[str, int]]:
    if not isinstance(value, dict) or not value:
        raise InvalidInput("qrels must map query ids to {external_id: grade}")
    if unknown := sorted(str(q) for q in value if str(q) not in known):
        raise InvalidInput(
            f"qrels name {len(unknown)} query id(s) that are not among the queries",
            details={"unknown_query_ids": unknown[:20]},
        )
    out: dict[str, dict[str, int]] = {}
    for qid, judged in value.items():
        if not isinstance(judged, dict):
            raise InvalidInput(f"qrels[{qid!r}] must map external ids to grades", details={"query_id": qid})
        for doc, grade in judged.items():
            if isinstance(grade, bool) or not isinstance(grade, int) or grade < 0:
                raise InvalidInput(
                    f"qrels[{qid!r}][{doc!r}]: a grade is an integer >= 0",
                    details={"query_id": qid, "external_id": doc},
                )
        out[str(qid)] = {str(doc): int(g) for doc, g in judged.items()}
    return out


def _modes(value: Any) -> list[str]:
    if value is None:
        return ["hybrid"]
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise InvalidInput("modes must be a non-empty list", details={"modes": list(MODES)})
    if unknown := [m for m in value if m not in MODES]:
        raise InvalidInput(
            f"unknown mode(s): {', '.join(unknown)}", details={"unknown": unknown, "modes": list(MODES)}
        )
    return list(dict.fromkeys(value))


def _versions(s: Session, kb: KnowledgeBase, value: Any, *, accept_building: bool) -> list[int] | None:
    """The versions to score, each one a search can read now (or, for an evaluation that
    belongs to a version's build, ``building``: the pipeline runs the job once it is built)."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise InvalidInput("versions must be a non-empty list of version numbers")
    versions = list(dict.fromkeys(value))
    if len(versions) > MAX_VERSIONS:
        raise InvalidInput(f"at most {MAX_VERSIONS} versions per evaluation")
    for v in versions:
        if accept_building and _status(s, kb, v) == VersionStatus.BUILDING:
            continue
        try:
            searched_version(s, kb, v)
        except (Conflict, NotFound) as exc:
            raise InvalidInput(exc.message, details={"version": v}) from exc
    return versions


def _status(s: Session, kb: KnowledgeBase, version: int) -> str | None:
    return s.execute(
        select(KbVersion.status).where(KbVersion.kb_id == kb.id, KbVersion.version == version)
    ).scalar()
