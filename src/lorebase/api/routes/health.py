"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from lorebase import __version__
from lorebase.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with runtime.db.read_session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc}"
    executor = getattr(runtime, "executor", None)
    checks["workers"] = f"{executor.concurrency} threads" if executor else "none in this process"
    ok = checks["database"] == "ok"
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
