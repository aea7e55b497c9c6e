"""Retrieval evaluations of a KB (DESIGN.md §7): created as a job, read until completed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.api.idempotency import IDEMPOTENT
from lorebase.api.schemas.requests import EvaluationRequest
from lorebase.services import evaluations

router = APIRouter(prefix="/api/v1", tags=["evaluations"])


@router.post("/kbs/{kb_id}/evaluations", status_code=202, dependencies=[IDEMPOTENT])
def create_evaluation(
    kb_id: str, body: EvaluationRequest, runtime: RuntimeDep, p: PrincipalDep
) -> dict[str, Any]:
    return evaluations.create(runtime, p, kb_id, body.model_dump(exclude_none=True, exclude_defaults=True))


@router.get("/evaluations/{evaluation_id}")
def get_evaluation(evaluation_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return evaluations.get(runtime, p, evaluation_id)
