"""Liveness, readiness and Prometheus metrics.

``/metrics`` needs no API key, like ``/healthz``: scrapers rarely carry one, and it exposes only
aggregate counts and timings (no names, ids or contents of any workspace). Keep it off the
public internet the way you would a database port (a reverse proxy rule, a private listener).
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text

from lorebase import __version__
from lorebase.api.deps import RuntimeDep
from lorebase.metrics import build_registry

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
def readyz(request: Request, runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with runtime.db.read_session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc}"
    process = getattr(request.app.state, "process", None)
    executor = process.executor if process is not None else None
    child = process.worker_child if process is not None else None
    if child is not None:
        pid = child.pid
        checks["workers"] = (
            f"{child.concurrency} threads in worker process {pid}" if pid else "worker process starting"
        )
    else:
        checks["workers"] = f"{executor.concurrency} threads" if executor else "none in this process"
    ok = checks["database"] == "ok"
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


_registry_lock = threading.Lock()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """The Prometheus text format: this app's database figures and this process's instruments."""
    return Response(generate_latest(_registry(request, runtime)), media_type=CONTENT_TYPE_LATEST)


def _registry(request: Request, runtime: RuntimeDep) -> CollectorRegistry:
    """One registry per app, built on the first scrape and kept on ``app.state`` (not the global
    default registry: several apps in one process must not clash)."""
    state = request.app.state
    with _registry_lock:
        registry: CollectorRegistry | None = getattr(state, "metrics_registry", None)
        if registry is None:
            process = getattr(state, "process", None)
            child = process.worker_child if process is not None else None  # serve's worker process
            registry = state.metrics_registry = build_registry(
                runtime.db, also=child.metrics_text if child is not None else None
            )
    return registry
