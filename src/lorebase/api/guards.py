"""Request guards that run before every route (``FastAPI(dependencies=[...])``): inputs that
pass the schema but that no database can store or compare answer 422 instead of a 500.

* an integer query parameter (``offset``, ``limit``, ``after``, ``days``…) outside the signed
  64-bit range: SQLite raises ``OverflowError`` and PostgreSQL ``NumericValueOutOfRange`` on it;
* a NUL character in a path or query parameter: PostgreSQL text cannot hold one (psycopg raises
  on the bound value), so an id or filter containing one would crash the lookup.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lorebase.errors import PayloadTooLarge
from lorebase.settings import Settings

#: the largest integer SQLite and PostgreSQL (bigint) accept
INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"[+-]?\d+")


def _error(location: str, name: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": (location, name), "msg": message, "input": None}]
    )


def _beyond_int64(value: str) -> bool:
    digits = value.strip().lstrip("+-").lstrip("0")
    # int() refuses more than 4300 digits (a ValueError): compare lengths first
    return len(digits) > len(str(INT64_MAX)) or (bool(digits) and int(digits) > INT64_MAX)


async def storable_parameters(request: Request) -> None:
    """422 for parameters no database can store; ``async`` (no I/O): no thread-pool hop."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value or "\x00" in name:
            raise _error("query", name, "NUL characters are not allowed")
        if _INTEGER.fullmatch(value.strip()) and _beyond_int64(value):
            raise _error("query", name, f"must be between {-INT64_MAX} and {INT64_MAX}")
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise _error("path", name, "NUL characters are not allowed")


class BodyLimit:
    """No request body is read past its cap, on any endpoint: 413 ``payload_too_large``.

    Routes that take JSON (FastAPI parses it whole) would otherwise buffer whatever a client
    sends. A JSON body may be as large as one uploaded file (``max_upload_bytes``); a multipart
    body as large as a full batch of files (``uploads.request_cap``, which ``receive_files``
    also enforces part by part). A declared ``Content-Length`` over the cap is refused before
    a byte is read; an undeclared (chunked) body is counted as it arrives and refused the moment
    it passes the cap (the error is raised inside the route that reads it, and answered by the
    API's error handler). Pure ASGI, so streaming responses are not buffered.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def cap(self, content_type: bytes) -> int:
        from lorebase.api.uploads import request_cap

        if content_type.lower().startswith(b"multipart/form-data"):
            return request_cap(self.settings)
        return self.settings.max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        cap = self.cap(headers.get(b"content-type", b""))
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > cap:
            from lorebase.api.errors import error_body

            message = f"the request body is {int(declared)} bytes: over the {cap} byte limit"
            response = JSONResponse(
                error_body(413, message, details={"limit_bytes": cap}),
                status_code=413,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise PayloadTooLarge(
                        f"the request body is over the {cap} byte limit", details={"limit_bytes": cap}
                    )
            return message

        await self.app(scope, counted, send)
