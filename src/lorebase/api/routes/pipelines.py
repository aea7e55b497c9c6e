"""Pipeline status and control, jobs and queue health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.api.idempotency import IDEMPOTENT
from lorebase.services import jobs, pipelines

router = APIRouter(prefix="/api/v1", tags=["pipelines"])


@router.get("/pipelines/{pipeline_id}")
def get_pipeline(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.get(runtime, p, pipeline_id)


@router.post("/pipelines/{pipeline_id}/cancel", dependencies=[IDEMPOTENT])
def cancel(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.cancel(runtime, p, pipeline_id)


@router.post("/pipelines/{pipeline_id}/pause", dependencies=[IDEMPOTENT])
def pause(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.pause(runtime, p, pipeline_id)


@router.post("/pipelines/{pipeline_id}/resume", dependencies=[IDEMPOTENT])
def resume(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.resume(runtime, p, pipeline_id)


@router.post("/pipelines/{pipeline_id}/retry", dependencies=[IDEMPOTENT])
def retry(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.retry(runtime, p, pipeline_id)


@router.get("/jobs")
def list_jobs(
    runtime: RuntimeDep,
    p: PrincipalDep,
    status: str | None = None,
    kb_id: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    return jobs.list_jobs(runtime, p, status=status, kb_id=kb_id, limit=limit, offset=offset)


@router.post("/jobs/{job_id}/retry", dependencies=[IDEMPOTENT])
def retry_job(job_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return jobs.retry_job(runtime, p, job_id)


@router.get("/queue")
def queue(runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return jobs.queue_stats(runtime, p)
