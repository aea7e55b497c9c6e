"""API keys of the caller's workspace (``admin`` scope): list, create (shown once), revoke.

The CLI (``lorebase keys create|list|revoke``) does the same on the local data dir; these
endpoints let an admin key manage its own workspace's keys over HTTP and never see another's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.api.schemas.requests import StorableModel
from lorebase.errors import InvalidInput
from lorebase.services import auth

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


class KeyCreate(StorableModel):
    name: str = Field("", max_length=200)
    scopes: list[str] = Field(default_factory=lambda: ["read"], min_length=1, max_length=3)
    expires_at: datetime | None = Field(None, description="UTC; omitted: the key never expires.")


@router.get("")
def list_keys(runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    items = auth.list_keys(runtime.db, workspace_id=p.workspace_id)
    return {"items": items, "total": len(items)}


@router.post("", status_code=201)
async def create_key(body: KeyCreate, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    expires = body.expires_at
    if expires is not None:  # a time without a zone is UTC, like every timestamp here
        expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires.astimezone(UTC)
    scopes = auth.normalize_scopes(body.scopes)
    if not all(p.allows(s) for s in scopes):
        raise InvalidInput("a key cannot grant scopes its creator does not have")
    plain, key = await run_in_threadpool(
        lambda: auth.create_key(
            runtime.db, name=body.name, scopes=scopes, expires_at=expires, workspace_id=p.workspace_id
        )
    )
    return {**auth.key_to_dict(key), "key": plain}


@router.delete("/{key_id}", status_code=204)
def revoke_key(key_id: str, runtime: RuntimeDep, p: PrincipalDep) -> Response:
    auth.revoke_key(runtime.db, key_id, workspace_id=p.workspace_id)
    return Response(status_code=204)
