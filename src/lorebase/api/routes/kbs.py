"""Knowledge base and document endpoints (DESIGN.md §7)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.api.idempotency import IDEMPOTENT
from lorebase.api.ratelimit import RATE_UPLOAD
from lorebase.api.routes.drafts import MULTIPART_FILES
from lorebase.api.schemas.requests import DocumentsBatch, WebSource
from lorebase.api.uploads import is_multipart, read_json, receive_files, request_cap
from lorebase.services import kbs, sources

router = APIRouter(prefix="/api/v1", tags=["knowledge bases"])

DOCUMENTS_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": DocumentsBatch.model_json_schema()},
            "multipart/form-data": MULTIPART_FILES,
        },
        "required": True,
    }
}


@router.get("/kbs")
def list_kbs(
    runtime: RuntimeDep, p: PrincipalDep, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)
) -> dict[str, Any]:
    return kbs.list_kbs(runtime, p, limit=limit, offset=offset)


@router.get("/kbs/{kb_id}")
def get_kb(kb_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return kbs.get(runtime, p, kb_id)


@router.delete("/kbs/{kb_id}", status_code=204)
def delete_kb(kb_id: str, runtime: RuntimeDep, p: PrincipalDep) -> Response:
    kbs.delete_kb(runtime, p, kb_id)
    return Response(status_code=204)


@router.post(
    "/kbs/{kb_id}/documents",
    status_code=202,
    openapi_extra=DOCUMENTS_BODY,
    dependencies=[RATE_UPLOAD, IDEMPOTENT],
)
async def add_documents(kb_id: str, request: Request, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    if is_multipart(request):
        await run_in_threadpool(kbs.get, runtime, p, kb_id)  # 404 before reading the body
        async with receive_files(request, runtime.settings) as files:
            return await run_in_threadpool(lambda: kbs.add_documents(runtime, p, kb_id, files=files))
    body = await read_json(request, DocumentsBatch, cap=request_cap(runtime.settings))
    assert isinstance(body, DocumentsBatch)
    records = [r.model_dump() for r in body.documents]
    return await run_in_threadpool(lambda: kbs.add_documents(runtime, p, kb_id, records=records))


@router.post("/kbs/{kb_id}/sources", status_code=202, dependencies=[RATE_UPLOAD, IDEMPOTENT])
def add_source(kb_id: str, body: WebSource, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return sources.add_to_kb(runtime, p, kb_id, body.url, body.crawl)


@router.post("/kbs/{kb_id}/refresh", status_code=202, dependencies=[IDEMPOTENT])
def refresh(kb_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return sources.refresh(runtime, p, kb_id)


@router.get("/kbs/{kb_id}/documents")
def list_documents(
    kb_id: str,
    runtime: RuntimeDep,
    p: PrincipalDep,
    status: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    return kbs.list_documents(runtime, p, kb_id, status=status, limit=limit, offset=offset)


@router.get("/documents/{document_id}")
def get_document(document_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return kbs.get_document(runtime, p, document_id)


@router.get("/documents/{document_id}/chunks")
def list_chunks(
    document_id: str,
    runtime: RuntimeDep,
    p: PrincipalDep,
    limit: int = Query(1000, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    return kbs.list_chunks(runtime, p, document_id, limit=limit, offset=offset)
