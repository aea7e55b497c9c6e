"""Browser-facing safety: the security headers of every response, and the check that keeps
``/login?next=`` from becoming an open redirect.

Every response gets ``X-Content-Type-Options: nosniff`` and ``X-Frame-Options: DENY``. The
dashboard's pages get a Content-Security-Policy that allows scripts and styles from our own
origin only, so even if some text escaped the escaping, an injected ``<script>`` or ``onerror=``
could not run (defence in depth), and ``Referrer-Policy: same-origin``. Everything else (the JSON
API, ``/healthz``, ``/metrics``, the SSE stream) gets ``default-src 'none'; frame-ancestors
'none'`` and ``Referrer-Policy: no-referrer``; the API's responses (keys, documents, search
results) also ``Cache-Control: no-store``. The OpenAPI pages (``/docs``, ``/redoc``), which load
Swagger UI / ReDoc from a CDN, get no CSP.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
#: for responses that are data, never a page: nothing may load, nothing may frame it
API_CSP = "default-src 'none'; frame-ancestors 'none'"
COMMON = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
}
HEADERS = {  # the dashboard's
    **COMMON,
    b"content-security-policy": CSP.encode(),
    b"referrer-policy": b"same-origin",
}
API_HEADERS = {  # everything else's (but the OpenAPI pages')
    **COMMON,
    b"content-security-policy": API_CSP.encode(),
    b"referrer-policy": b"no-referrer",
}
DOCS_HEADERS = {**COMMON, b"referrer-policy": b"no-referrer"}
#: forced on ``/api/`` responses: they carry keys and workspace data that no cache should keep
NO_STORE = (b"cache-control", b"no-store")
#: the dashboard's paths
DASHBOARD_ROOTS = ("kbs", "search", "jobs", "login", "logout", "static")
#: the OpenAPI pages (Swagger UI and ReDoc load scripts and styles from a CDN): no CSP
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path.split("/", 2)[1] in DASHBOARD_ROOTS


def headers_for(path: str) -> dict[bytes, bytes]:
    if is_dashboard_path(path):
        return HEADERS
    if path in DOCS_PATHS:
        return DOCS_HEADERS
    return API_HEADERS


def _stores_nothing(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the route's own ``Cache-Control`` already says ``no-store`` (``private,
    no-store`` on a signed original): it is kept as it is."""
    return any(k.lower() == NO_STORE[0] and b"no-store" in v.lower() for k, v in headers)


class SecurityHeaders:
    """Pure ASGI middleware (a ``BaseHTTPMiddleware`` would buffer streaming responses such as
        the SSE endpoint's) adding the security headers to every HTTP response; a header the route
        set itself is kept, except ``Cache-Control`` on ``/api/``, which is always ``no-store`` (a
    route's own that includes ``no-store`` stays)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra_headers = headers_for(path)
        no_store = path.startswith("/api/")

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if no_store:
                    kept = [(k, v) for k, v in headers if k.lower() != NO_STORE[0]]
                    if len(kept) == len(headers) or not _stores_nothing(headers):
                        headers = [*kept, NO_STORE]
                names = {name.lower() for name, _ in headers}
                headers.extend((k, v) for k, v in extra_headers.items() if k not in names)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, add_headers)


def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to go to after signing in, or ``default``.

    Refused: absolute URLs (``https://evil``), scheme-relative ones (``//evil``, which browsers
    also read from ``/\\evil``), other schemes (``javascript:``) and control characters."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ord(c) < 0x20 or c == "\x7f" or c == "\\" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
