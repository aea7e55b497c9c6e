"""Every endpoint of the API as a :class:`Call`: its method, path, body, how its answer is read and
whether it is safe to send again. The one home of the HTTP contract on the client side; the sync
and async clients only execute calls.

Request bodies are built with the API's own models (``lorebase.api.schemas.requests``), so a
body the server would refuse is refused here first, with the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from lorebase.api.schemas.requests import (
    DocumentsBatch,
    DraftCreate,
    DraftPatch,
    EvaluationRequest,
    FeedbackRequest,
    KbPatch,
    PreviewRequest,
    SearchRequest,
    TextSource,
    WebSource,
)
from lorebase.client import models as m
from lorebase.client.errors import ProtocolError, ValidationFailed
from lorebase.client.retry import Safety

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
API = "/api/v1"


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    safety: Safety = "safe"
    json: Any = None
    params: Mapping[str, Any] | None = None
    #: files sent as the repeatable multipart field ``files``, each streamed from disk
    files: Sequence[Path] = ()
    #: text fields of a multipart body (``external_id``, one per file)
    form: Mapping[str, list[str]] | None = None


def path(template: str, *ids: str | int) -> str:
    """A path with its ids escaped: an id is a path segment, never more (``../keys`` stays one)."""
    return API + template.format(*(quote(str(i), safe="") for i in ids))


def body(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """A request body checked by the API's model (None fields left out, as the server defaults them)."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None}).model_dump(
            mode="json", exclude_none=True
        )
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        raise ValidationFailed("the request is not valid", code="invalid_input", details=details) from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ProtocolError(
            f"the server answered HTTP {response.status_code} with a body that is not JSON"
        ) from None


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        try:
            return cls.model_validate(_json(response))
        except ValidationError as exc:
            raise ProtocolError(f"the server's answer is not a {cls.__name__}: {exc}") from None

    return parse


def page(cls: type[M]) -> Callable[[httpx.Response], m.Page[M]]:
    return model(m.Page[cls])  # type: ignore[valid-type]


def nothing(_: httpx.Response) -> None:
    return None


def _kb_change(response: httpx.Response) -> m.KbChange:
    if response.status_code == 202:
        return model(m.KbChange)(response)
    return m.KbChange(kb=model(m.KnowledgeBase)(response))


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# drafts


def create_draft(name: str, description: str | None, config: dict[str, Any] | None) -> Call[m.Draft]:
    data = body(DraftCreate, name=name, description=description, config=config)
    return Call("POST", path("/kb-drafts"), model(m.Draft), "keyed", json=data)


def get_draft(draft_id: str) -> Call[m.Draft]:
    return Call("GET", path("/kb-drafts/{}", draft_id), model(m.Draft))


def patch_draft(
    draft_id: str, name: str | None, description: str | None, config: dict[str, Any] | None
) -> Call[m.Draft]:
    data = body(DraftPatch, name=name, description=description, config=config)
    return Call("PATCH", path("/kb-drafts/{}", draft_id), model(m.Draft), json=data)


def delete_draft(draft_id: str) -> Call[None]:
    return Call("DELETE", path("/kb-drafts/{}", draft_id), nothing)


def _sources(response: httpx.Response) -> list[m.DraftSource]:
    return model(_Sources)(response).sources


class _Sources(m.ApiModel):
    sources: list[m.DraftSource]


def add_web(
    draft_id: str, url: str, crawl: dict[str, Any] | None, refresh_every: str | None = None
) -> Call[list[m.DraftSource]]:
    data = body(WebSource, type="web", url=url, crawl=crawl, refresh_every=refresh_every)
    return Call("POST", path("/kb-drafts/{}/sources", draft_id), _sources, "keyed", json=data)


def add_text(draft_id: str, documents: Sequence[Mapping[str, Any]]) -> Call[list[m.DraftSource]]:
    data = body(TextSource, type="text", documents=list(documents))
    return Call("POST", path("/kb-drafts/{}/sources", draft_id), _sources, "keyed", json=data)


def _external_ids(files: Sequence[Path], external_ids: Sequence[str] | None) -> dict[str, list[str]] | None:
    if external_ids is None:
        return None
    if len(external_ids) != len(files):
        raise ValidationFailed(f"{len(external_ids)} external ids for {len(files)} files: give one per file")
    return {"external_id": list(external_ids)}


def add_files(
    draft_id: str, files: Sequence[Path], external_ids: Sequence[str] | None
) -> Call[list[m.DraftSource]]:
    form = _external_ids(files, external_ids)
    return Call("POST", path("/kb-drafts/{}/sources", draft_id), _sources, "keyed", files=files, form=form)


def delete_source(draft_id: str, source_id: str) -> Call[None]:
    return Call("DELETE", path("/kb-drafts/{}/sources/{}", draft_id, source_id), nothing)


def preview(draft_id: str, source_id: str | None, limit: int) -> Call[m.Preview]:
    data = body(PreviewRequest, source_id=source_id, limit=limit)
    return Call("POST", path("/kb-drafts/{}/preview", draft_id), model(m.Preview), json=data)


def validate(draft_id: str) -> Call[m.Validation]:
    return Call("POST", path("/kb-drafts/{}/validate", draft_id), model(m.Validation))


def _start(not_before: datetime | None) -> dict[str, Any] | None:
    """``?not_before=`` (a scheduled start) as the API takes it: ISO 8601 with its zone."""
    return None if not_before is None else {"not_before": not_before.isoformat()}


def finalize(draft_id: str, not_before: datetime | None = None) -> Call[m.Finalized]:
    answer = model(m.Finalized)
    return Call("POST", path("/kb-drafts/{}/finalize", draft_id), answer, "keyed", params=_start(not_before))


# knowledge bases


def list_kbs(limit: int, offset: int) -> Call[m.Page[m.KnowledgeBase]]:
    return Call("GET", path("/kbs"), page(m.KnowledgeBase), params={"limit": limit, "offset": offset})


def get_kb(kb_id: str) -> Call[m.KnowledgeBase]:
    return Call("GET", path("/kbs/{}", kb_id), model(m.KnowledgeBase))


def patch_kb(kb_id: str, **fields: Any) -> Call[m.KbChange]:
    data = body(KbPatch, **fields)
    return Call("PATCH", path("/kbs/{}", kb_id), _kb_change, "keyed", json=data)


def delete_kb(kb_id: str) -> Call[None]:
    return Call("DELETE", path("/kbs/{}", kb_id), nothing)


def add_documents(
    kb_id: str, documents: Sequence[Mapping[str, Any]], not_before: datetime | None = None
) -> Call[m.DocumentsAdded]:
    data = body(DocumentsBatch, documents=list(documents))
    answer = model(m.DocumentsAdded)
    return Call(
        "POST", path("/kbs/{}/documents", kb_id), answer, "keyed", json=data, params=_start(not_before)
    )


def upload_documents(
    kb_id: str, files: Sequence[Path], external_ids: Sequence[str] | None
) -> Call[m.DocumentsAdded]:
    form = _external_ids(files, external_ids)
    answer = model(m.DocumentsAdded)
    return Call("POST", path("/kbs/{}/documents", kb_id), answer, "keyed", files=files, form=form)


def add_source(
    kb_id: str,
    url: str,
    crawl: dict[str, Any] | None,
    not_before: datetime | None = None,
    refresh_every: str | None = None,
) -> Call[m.SourceAdded]:
    data = body(WebSource, type="web", url=url, crawl=crawl, refresh_every=refresh_every)
    answer = model(m.SourceAdded)
    return Call("POST", path("/kbs/{}/sources", kb_id), answer, "keyed", json=data, params=_start(not_before))


def list_sources(kb_id: str) -> Call[m.Page[m.WebSourceInfo]]:
    return Call("GET", path("/kbs/{}/sources", kb_id), page(m.WebSourceInfo))


def refresh(kb_id: str, not_before: datetime | None = None) -> Call[m.PipelineStarted]:
    answer = model(m.PipelineStarted)
    return Call("POST", path("/kbs/{}/refresh", kb_id), answer, "keyed", params=_start(not_before))


def list_versions(kb_id: str) -> Call[m.Page[m.KbVersion]]:
    return Call("GET", path("/kbs/{}/versions", kb_id), page(m.KbVersion))


def activate_version(kb_id: str, version: int) -> Call[m.KbVersion]:
    return Call("POST", path("/kbs/{}/versions/{}/activate", kb_id, version), model(m.KbVersion), "once")


# documents and search


def list_documents(kb_id: str, status: str | None, limit: int, offset: int) -> Call[m.Page[m.Document]]:
    params = _params(status=status, limit=limit, offset=offset)
    return Call("GET", path("/kbs/{}/documents", kb_id), page(m.Document), params=params)


def get_document(document_id: str) -> Call[m.Document]:
    return Call("GET", path("/documents/{}", document_id), model(m.Document))


def list_chunks(document_id: str, limit: int, offset: int) -> Call[m.Page[m.Chunk]]:
    params = {"limit": limit, "offset": offset}
    return Call("GET", path("/documents/{}/chunks", document_id), page(m.Chunk), params=params)


def search(kb_id: str, **fields: Any) -> Call[m.SearchResponse]:
    data = body(SearchRequest, **fields)
    return Call("POST", path("/kbs/{}/search", kb_id), model(m.SearchResponse), json=data)


def feedback(query_id: str, value: str, comment: str | None) -> Call[m.Feedback]:
    data = body(FeedbackRequest, feedback=value, comment=comment)
    return Call("POST", path("/queries/{}/feedback", query_id), model(m.Feedback), json=data)


# pipelines, jobs, queue


def get_pipeline(pipeline_id: str) -> Call[m.Pipeline]:
    return Call("GET", path("/pipelines/{}", pipeline_id), model(m.Pipeline))


def control_pipeline(pipeline_id: str, action: str) -> Call[m.Pipeline]:
    if action not in ("cancel", "pause", "resume", "retry"):
        raise ValidationFailed(f"unknown pipeline action {action!r}")
    return Call("POST", path("/pipelines/{}/" + action, pipeline_id), model(m.Pipeline), "keyed")


def events_path(pipeline_id: str) -> str:
    return path("/pipelines/{}/events", pipeline_id)


def list_jobs(status: str | None, kb_id: str | None, limit: int, offset: int) -> Call[m.Page[m.Job]]:
    params = _params(status=status, kb_id=kb_id, limit=limit, offset=offset)
    return Call("GET", path("/jobs"), page(m.Job), params=params)


def retry_job(job_id: str) -> Call[m.Job]:
    return Call("POST", path("/jobs/{}/retry", job_id), model(m.Job), "keyed")


def queue() -> Call[m.QueueStats]:
    return Call("GET", path("/queue"), model(m.QueueStats))


# the workspace (GET: read scope; PATCH: admin)


def get_workspace() -> Call[m.WorkspaceInfo]:
    return Call("GET", path("/workspace"), model(m.WorkspaceInfo))


def patch_workspace(**fields: Any) -> Call[m.WorkspaceInfo]:
    """Only the fields given change; ``pool=None`` puts the workspace back on the default workers
    (so no None-dropping ``body`` here)."""
    return Call("PATCH", path("/workspace"), model(m.WorkspaceInfo), "safe", json=dict(fields))


# keys (admin scope)


def list_keys() -> Call[m.Page[m.ApiKey]]:
    return Call("GET", path("/keys"), page(m.ApiKey))


def create_key(name: str, scopes: Sequence[str], expires_at: datetime | None) -> Call[m.ApiKey]:
    data: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if expires_at is not None:
        data["expires_at"] = expires_at.isoformat()
    return Call("POST", path("/keys"), model(m.ApiKey), "once", json=data)


def revoke_key(key_id: str) -> Call[None]:
    return Call("DELETE", path("/keys/{}", key_id), nothing)


# evaluations


def create_evaluation(kb_id: str, **fields: Any) -> Call[m.EvaluationStarted]:
    data = body(EvaluationRequest, **fields)
    return Call("POST", path("/kbs/{}/evaluations", kb_id), model(m.EvaluationStarted), "keyed", json=data)


def get_evaluation(evaluation_id: str) -> Call[m.Evaluation]:
    return Call("GET", path("/evaluations/{}", evaluation_id), model(m.Evaluation))
