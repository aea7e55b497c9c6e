"""Search and feedback endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.api.pacing import SearchPacer
from lorebase.api.ratelimit import RATE_SEARCH
from lorebase.api.schemas.requests import FeedbackRequest, SearchRequest
from lorebase.services import search

router = APIRouter(prefix="/api/v1", tags=["search"])


@router.post("/kbs/{kb_id}/search", dependencies=[RATE_SEARCH])
async def search_kb(
    kb_id: str, body: SearchRequest, request: Request, runtime: RuntimeDep, p: PrincipalDep
) -> dict[str, Any]:
    pacer: SearchPacer = request.app.state.search_pacer  # paced while this server ingests
    return await pacer.run(
        runtime,
        search.search,
        runtime,
        p,
        kb_id,
        body.query,
        mode=body.mode,
        top_k=body.top_k,
        filters=body.filters,
        version=body.version,
    )


@router.post("/queries/{query_id}/feedback")
def feedback(query_id: str, body: FeedbackRequest, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return search.feedback(runtime, p, query_id, body.feedback, body.comment)
