"""Knowledge base and document endpoints (DESIGN.md §7)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from lorebase.adapters.blobs.protocol import attachment
from lorebase.api.deps import NotBefore, PrincipalDep, RuntimeDep, not_before_of
from lorebase.api.idempotency import IDEMPOTENT
from lorebase.api.ratelimit import RATE_UPLOAD
from lorebase.api.routes.drafts import MULTIPART_FILES
from lorebase.api.schemas.requests import DocumentsBatch, KbPatch, KbWebSource, StartAt
from lorebase.api.uploads import is_multipart, read_json, receive_files, request_cap
from lorebase.services import kbs, originals, sources, versions
from lorebase.services.pipelines import scheduled_start

#: a config version in a path: 1 .. the largest 32-bit integer (a column's range; beyond it, 422)
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]

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


@router.patch("/kbs/{kb_id}", dependencies=[IDEMPOTENT])
def update_kb(kb_id: str, body: KbPatch, runtime: RuntimeDep, p: PrincipalDep) -> JSONResponse:
    """Name, description and notifications change at once (200, the KB); a change of chunking,
    embedding or store builds version N+1 beside the live one (202 ``{version, pipeline_id}``)."""
    status, result = versions.update_kb(
        runtime,
        p,
        kb_id,
        name=body.name,
        description=body.description,
        config=body.config,
        activate=body.activate,
        evaluation=body.evaluation,
    )
    return JSONResponse(jsonable_encoder(result), status_code=status)


@router.get("/kbs/{kb_id}/versions")
def list_versions(kb_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return versions.list_versions(runtime, p, kb_id)


@router.get("/kbs/{kb_id}/versions/{version}")
def get_version(kb_id: str, version: VersionNumber, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return versions.get_version(runtime, p, kb_id, version)


@router.post("/kbs/{kb_id}/versions/{version}/activate")
def activate_version(
    kb_id: str, version: VersionNumber, runtime: RuntimeDep, p: PrincipalDep
) -> dict[str, Any]:
    """A complete or retired version goes live in one transaction (forwards, or a rollback)."""
    return versions.activate(runtime, p, kb_id, version)


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
async def add_documents(
    kb_id: str, request: Request, runtime: RuntimeDep, p: PrincipalDep, not_before: NotBefore = None
) -> dict[str, Any]:
    scheduled_start(not_before)  # a 422 before reading the body
    if is_multipart(request):
        await run_in_threadpool(kbs.get, runtime, p, kb_id)  # 404 before reading the body
        async with receive_files(request, runtime.settings) as got:
            return await run_in_threadpool(
                lambda: kbs.add_documents(
                    runtime, p, kb_id, files=got.files, external_ids=got.external_ids, not_before=not_before
                )
            )
    body = await read_json(request, DocumentsBatch, cap=request_cap(runtime.settings))
    assert isinstance(body, DocumentsBatch)
    records = [r.model_dump(exclude={"not_before"}) for r in body.documents]
    start = not_before_of(not_before, body)
    return await run_in_threadpool(
        lambda: kbs.add_documents(runtime, p, kb_id, records=records, not_before=start)
    )


@router.post("/kbs/{kb_id}/sources", status_code=202, dependencies=[RATE_UPLOAD, IDEMPOTENT])
def add_source(
    kb_id: str, body: KbWebSource, runtime: RuntimeDep, p: PrincipalDep, not_before: NotBefore = None
) -> dict[str, Any]:
    start = not_before_of(not_before, body)
    return sources.add_to_kb(
        runtime, p, kb_id, body.url, body.crawl, not_before=start, refresh_every=body.refresh_every
    )


@router.get("/kbs/{kb_id}/sources")
def list_sources(kb_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    """The KB's web sources: ``{id, type, url, crawl, created_at, last_refreshed_at,
    refresh_every, next_refresh_at}``."""
    return sources.list_sources(runtime, p, kb_id)


@router.post("/kbs/{kb_id}/refresh", status_code=202, dependencies=[IDEMPOTENT])
def refresh(
    kb_id: str,
    runtime: RuntimeDep,
    p: PrincipalDep,
    not_before: NotBefore = None,
    body: StartAt | None = None,
) -> dict[str, Any]:
    start = not_before_of(not_before, body)
    return sources.refresh(runtime, p, kb_id, not_before=start)


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


@router.get(
    "/documents/{document_id}/original",
    status_code=302,
    response_class=RedirectResponse,
    responses={
        302: {"description": "a signed link to the original, valid for `signed_url_ttl_seconds`"},
        410: {"description": "the original is no longer kept (retention removed it)"},
    },
)
def get_original(document_id: str, runtime: RuntimeDep, p: PrincipalDep) -> RedirectResponse:
    """A redirect to a signed, expiring link to the uploaded or fetched original: the bucket's
    presigned URL on the s3 store, ``/api/v1/originals/{id}?expires=…&sig=…`` otherwise."""
    return RedirectResponse(originals.link(runtime, p, document_id), status_code=302)


@router.get(
    "/originals/{document_id}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the original, as a download"},
        403: {"description": "the signature does not hold, or the link expired"},
    },
)
def signed_original(
    document_id: str,
    runtime: RuntimeDep,
    expires: int = Query(..., description="Unix time the link expires at"),
    sig: str = Query(..., max_length=128, description="HMAC-SHA256 of the document, its blob and `expires`"),
) -> Response:
    """The original behind a signed link: no API key, the signature is the credential. Served as
    an attachment in a sandbox, never rendered inline."""
    got = originals.signed(runtime, document_id, expires=expires, sig=sig)
    return Response(
        got.data,
        media_type=got.media_type,
        headers={
            "Content-Disposition": attachment(got.filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )
