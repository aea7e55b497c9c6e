"""Browser-facing safety of the dashboard: the Content-Security-Policy and friends on every
dashboard response, and the check that keeps ``/login?next=`` from becoming an open redirect.

The CSP allows scripts and styles from our own origin only, so even if some text escaped the
escaping, an injected ``<script>`` or ``onerror=`` could not run: defence in depth.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
HEADERS = {
    b"content-security-policy": CSP.encode(),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"same-origin",
}
#: the dashboard's paths; the JSON API and the OpenAPI pages (which load a CDN) are left alone
DASHBOARD_ROOTS = ("kbs", "search", "jobs", "login", "logout", "static")


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path.split("/", 2)[1] in DASHBOARD_ROOTS


class SecurityHeaders:
    """Pure ASGI middleware (a ``BaseHTTPMiddleware`` would buffer streaming responses such as
    the SSE endpoint's) adding ``HEADERS`` to the responses of the dashboard's paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_dashboard_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in HEADERS.items() if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
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
