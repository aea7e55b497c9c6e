"""Every error leaves the API as ``{"error": {"code", "message", "details"}}`` with its status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from python_multipart.exceptions import MultipartParseError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lorebase.errors import LorebaseError, RateLimited

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def error_body(status: int, message: str, *, code: str | None = None, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code or _CODES.get(status, "error"), "message": message, "details": details}}


def install(app: FastAPI) -> None:
    @app.exception_handler(LorebaseError)
    async def _lorebase(_: Request, exc: LorebaseError) -> JSONResponse:
        headers: dict[str, str] | None = None
        if exc.status_code == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        elif exc.status_code == 413:
            # the body may be partly unread: closing stops the client sending the rest (uvicorn
            # would otherwise read and discard it all to keep the connection alive)
            headers = {"Connection": "close"}
        return JSONResponse(
            error_body(exc.status_code, exc.message, code=exc.code, details=exc.details),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return JSONResponse(error_body(422, "the request is not valid", details=details), status_code=422)

    @app.exception_handler(MultipartParseError)
    async def _multipart(_: Request, exc: MultipartParseError) -> JSONResponse:
        # a malformed multipart body (bad boundary framing, control characters in a part's
        # headers) is the client's error, wherever the body is streamed and parsed
        return JSONResponse(error_body(400, f"the multipart body is malformed: {exc}"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("lorebase.api").exception("unhandled error")
        return JSONResponse(error_body(500, "internal error; see the server log"), status_code=500)
