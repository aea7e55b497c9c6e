"""The caller's workspace: its tier (priority, worker pool) and retention.

``GET`` needs ``read``; ``PATCH`` needs ``admin`` (``services.auth.required_scope``). The CLI
(``lorebase workspace show|set``) does the same on the local data dir.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.api.schemas.requests import StorableModel
from lorebase.services import workspaces

router = APIRouter(prefix="/api/v1/workspace", tags=["workspace"])


class RetentionPatch(StorableModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key would silently change nothing

    originals_days: float | None = Field(
        None, ge=0, description="Days an original is kept; null: the default."
    )
    query_logs_days: float | None = Field(
        None, ge=0, description="Days query logs are kept; null: the default."
    )


class WorkspacePatch(StorableModel):
    model_config = ConfigDict(extra="forbid")

    priority: int | None = Field(
        None,
        ge=workspaces.PRIORITY_RANGE[0],
        le=workspaces.PRIORITY_RANGE[1],
        description="Added to the priority of every job the workspace queues.",
    )
    pool: str | None = Field(
        None,
        pattern=workspaces.POOL_PATTERN.pattern,
        description="The worker pool that takes its jobs (`lorebase worker --pool NAME`); null: the default workers.",
    )
    retention: RetentionPatch | None = Field(None, description="Only the keys given change.")


@router.get("")
def get_workspace(runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return workspaces.get_workspace(runtime.db, p.workspace_id)


@router.patch("")
async def patch_workspace(body: WorkspacePatch, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if "priority" in given:
        changes["priority"] = body.priority if body.priority is not None else 0
    if "pool" in given:
        changes["pool"] = body.pool
    if "retention" in given and body.retention is not None:
        changes["retention"] = {k: getattr(body.retention, k) for k in body.retention.model_fields_set}
    return await run_in_threadpool(lambda: workspaces.update_workspace(runtime.db, p.workspace_id, **changes))
