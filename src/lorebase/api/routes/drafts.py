"""KB draft endpoints (DESIGN.md §7). Thin: parse, call ``services.drafts``, shape the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from lorebase.api.deps import NotBefore, PrincipalDep, RuntimeDep, not_before_of
from lorebase.api.idempotency import IDEMPOTENT
from lorebase.api.ratelimit import RATE_FINALIZE, RATE_UPLOAD
from lorebase.api.schemas.requests import (
    DraftCreate,
    DraftPatch,
    PreviewRequest,
    StartAt,
    TextSource,
    WebSource,
)
from lorebase.api.uploads import is_multipart, read_json, receive_files, request_cap
from lorebase.services import drafts

router = APIRouter(prefix="/api/v1/kb-drafts", tags=["drafts"])

MULTIPART_FILES: dict[str, Any] = {
    "schema": {
        "type": "object",
        "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "external_id": {
                "type": "array",
                "items": {"type": "string", "maxLength": 500},
                "description": "One per file, in the order of the files: a file sent again with the "
                "same external id replaces its earlier version.",
            },
        },
        "required": ["files"],
    }
}
SOURCES_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {"oneOf": [TextSource.model_json_schema(), WebSource.model_json_schema()]}
            },
            "multipart/form-data": MULTIPART_FILES,
        },
        "required": True,
    }
}


@router.post("", status_code=201, dependencies=[IDEMPOTENT])
def create_draft(body: DraftCreate, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return drafts.create(runtime, p, name=body.name, description=body.description, config=body.config)


@router.get("/{draft_id}")
def get_draft(draft_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return drafts.get(runtime, p, draft_id)


@router.patch("/{draft_id}")
def patch_draft(draft_id: str, body: DraftPatch, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return drafts.patch(
        runtime, p, draft_id, name=body.name, description=body.description, config=body.config
    )


@router.delete("/{draft_id}", status_code=204)
def delete_draft(draft_id: str, runtime: RuntimeDep, p: PrincipalDep) -> Response:
    drafts.remove(runtime, p, draft_id)
    return Response(status_code=204)


@router.post(
    "/{draft_id}/sources",
    status_code=201,
    openapi_extra=SOURCES_BODY,
    dependencies=[RATE_UPLOAD, IDEMPOTENT],
)
async def add_sources(
    draft_id: str, request: Request, runtime: RuntimeDep, p: PrincipalDep
) -> dict[str, Any]:
    if is_multipart(request):
        await run_in_threadpool(drafts.get, runtime, p, draft_id)  # 404 before reading the body
        async with receive_files(request, runtime.settings) as got:
            sources = await run_in_threadpool(
                drafts.add_files, runtime, p, draft_id, got.files, got.external_ids
            )
        return {"sources": sources}
    body = await read_json(request, TextSource, WebSource, cap=request_cap(runtime.settings))
    if isinstance(body, WebSource):
        sources = await run_in_threadpool(
            drafts.add_web, runtime, p, draft_id, body.url, body.crawl, body.refresh_every
        )
        return {"sources": sources}
    assert isinstance(body, TextSource)
    records = [r.model_dump() for r in body.documents]
    sources = await run_in_threadpool(drafts.add_text, runtime, p, draft_id, records)
    return {"sources": sources}


@router.delete("/{draft_id}/sources/{source_id}", status_code=204)
def remove_source(draft_id: str, source_id: str, runtime: RuntimeDep, p: PrincipalDep) -> Response:
    drafts.remove_source(runtime, p, draft_id, source_id)
    return Response(status_code=204)


@router.post("/{draft_id}/preview")
def preview(
    draft_id: str, runtime: RuntimeDep, p: PrincipalDep, body: PreviewRequest | None = None
) -> dict[str, Any]:
    body = body or PreviewRequest()
    return drafts.preview(runtime, p, draft_id, source_id=body.source_id, limit=body.limit)


@router.post("/{draft_id}/validate")
def validate(draft_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return drafts.validate(runtime, p, draft_id)


@router.post("/{draft_id}/finalize", status_code=202, dependencies=[RATE_FINALIZE, IDEMPOTENT])
def finalize(
    draft_id: str,
    request: Request,
    runtime: RuntimeDep,
    p: PrincipalDep,
    not_before: NotBefore = None,
    body: StartAt | None = None,
) -> dict[str, Any]:
    start = not_before_of(not_before, body)
    result = drafts.finalize(runtime, p, draft_id, not_before=start)
    base = (runtime.settings.public_url or str(request.base_url)).rstrip("/")
    result["tracking_url"] = f"{base}/api/v1/pipelines/{result['pipeline_id']}"
    return result
