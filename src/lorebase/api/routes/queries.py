"""The query log of a KB: recent queries with their feedback, and negative feedback per day."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.services import search

router = APIRouter(prefix="/api/v1", tags=["search"])


@router.get("/kbs/{kb_id}/queries")
def list_queries(
    kb_id: str,
    runtime: RuntimeDep,
    p: PrincipalDep,
    feedback: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    return search.list_queries(runtime, p, kb_id, feedback=feedback, limit=limit, offset=offset)


@router.get("/kbs/{kb_id}/queries/daily")
def queries_by_day(
    kb_id: str, runtime: RuntimeDep, p: PrincipalDep, days: int = Query(30, ge=1, le=366)
) -> dict[str, Any]:
    return search.feedback_by_day(runtime, p, kb_id, days=days)
