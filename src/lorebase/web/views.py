"""The dashboard's pages. Thin like the API routes: read through the same services, scoped by
the signed-in principal's workspace, and render a template; the pages' scripts act through
the JSON API (``/api/v1``) with the session cookie."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from lorebase.adapters.embedders.local import LOCAL_MODELS
from lorebase.api.deps import RuntimeDep
from lorebase.db.states import PIPELINE_FINAL
from lorebase.jobs.scheduler import schedules
from lorebase.services import jobs, kbs, pipelines, search, sources
from lorebase.services.config import default_config, parse_config
from lorebase.services.kbs import DOC_STATUSES
from lorebase.tasks import REGISTRY
from lorebase.web.render import render
from lorebase.web.session import PagePrincipal

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, runtime: RuntimeDep, p: PagePrincipal) -> HTMLResponse:
    listing = kbs.list_kbs(runtime, p, limit=1000)
    return render(request, "kbs.html", {"kbs": listing["items"], "total": listing["total"], "nav": "kbs"})


@router.get("/kbs/new", response_class=HTMLResponse)
def new_kb(request: Request, runtime: RuntimeDep, p: PagePrincipal) -> HTMLResponse:
    return render(request, "wizard.html", {"config": default_config(runtime.settings), "nav": "new"})


@router.get("/kbs/{kb_id}", response_class=HTMLResponse)
def kb_page(
    request: Request,
    kb_id: str,
    runtime: RuntimeDep,
    p: PagePrincipal,
    status: str | None = Query(None),
) -> HTMLResponse:
    kb = kbs.get(runtime, p, kb_id)
    status = status if status in DOC_STATUSES else None
    docs = kbs.list_documents(runtime, p, kb_id, status=status, limit=1000, offset=0)
    pipeline: dict[str, Any] | None = None
    if kb["latest_pipeline_id"]:
        pipeline = pipelines.get(runtime, p, kb["latest_pipeline_id"])
    config = parse_config(kb["config"]).model_dump()  # the live one, defaults filled in
    context = {
        "kb": kb,
        "documents": docs["items"],
        "documents_total": docs["total"],
        "sources": sources.list_sources(runtime, p, kb_id)["items"],
        "pipeline": pipeline,
        "live": pipeline is not None and pipeline["status"] not in PIPELINE_FINAL,
        "config": config,
        "embedding_models": _embedding_models(config),
        "nav": "kbs",
    }
    return render(request, "kb.html", context)


def _embedding_models(config: dict[str, Any]) -> list[str]:
    """The re-index form's choices: the bundled models, and the KB's own if it is another."""
    models = [f"local:{name}" for name in LOCAL_MODELS]
    current = config["embedding"]["model"]
    return models if current in models else [current, *models]


@router.get("/kbs/{kb_id}/queries", response_class=HTMLResponse)
def query_log(
    request: Request,
    kb_id: str,
    runtime: RuntimeDep,
    p: PagePrincipal,
    days: int = Query(30, ge=1, le=366),
) -> HTMLResponse:
    kb = kbs.get(runtime, p, kb_id)
    context = {
        "kb": kb,
        "queries": search.list_queries(runtime, p, kb_id, limit=200)["items"],
        "daily": search.feedback_by_day(runtime, p, kb_id, days=days)["items"],
        "days": days,
        "nav": "kbs",
    }
    return render(request, "queries.html", context)


@router.get("/search", response_class=HTMLResponse)
def playground(
    request: Request, runtime: RuntimeDep, p: PagePrincipal, kb: str | None = None
) -> HTMLResponse:
    listing = kbs.list_kbs(runtime, p, limit=1000)["items"]
    return render(request, "search.html", {"kbs": listing, "selected": kb, "nav": "search"})


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, runtime: RuntimeDep, p: PagePrincipal) -> HTMLResponse:
    def listed(status: str) -> list[dict[str, Any]]:
        return list(jobs.list_jobs(runtime, p, status=status, kb_id=None, limit=200, offset=0)["items"])

    pending = listed("pending")
    context = {
        "queue": jobs.queue_stats(runtime, p),
        "running": listed("running"),
        # a pending job that has been tried already waits for its backoff: a scheduled retry
        "retries": [j for j in pending if j["attempts"] > 0],
        "waiting": sum(1 for j in pending if j["attempts"] == 0),
        "dead": listed("dead"),
        # the deployment's periodic tasks (cleanup, retention): the same for every workspace
        "periodic": schedules(runtime.db, REGISTRY, runtime.settings),
        "nav": "jobs",
    }
    return render(request, "jobs.html", context)
