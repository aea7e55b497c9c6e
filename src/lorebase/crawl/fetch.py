"""Fetching one page politely and safely: host gates, robots, redirects, caps, conditional GETs.

Every hop of a redirect chain is checked again: scheme and address (the SSRF guard, also
enforced on the socket actually connected), scope and robots.txt. Bodies are streamed and cut
at the byte cap; each request has a wall-clock limit. The outcome is a value, never an
exception, so that one bad page cannot stop a crawl.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx

from lorebase.adapters.parsers.registry import detect_media_type
from lorebase.errors import UnsupportedMediaType

from .guard import AddressPolicy, BlockedAddress, blocked_cause, precheck_url
from .links import DOCUMENT_TYPES, FILE_TYPES, PAGE_TYPES, PageLinks
from .robots import Robots
from .urls import normalize_url

Outcome = Literal["ok", "not_modified", "gone", "skipped", "failed", "retry"]
MAX_REDIRECTS = 5


@dataclass(slots=True)
class FetchResult:
    url: str
    outcome: Outcome
    final_url: str | None = None
    status: int | None = None
    body: bytes | None = None
    media_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    retry_after: float | None = None
    links: PageLinks | None = None  # an HTML page's links, read beside the fetch
    digest: str | None = None  # sha256 of the body, computed beside the fetch


class HostGate:
    """Politeness towards one host: at most ``concurrency`` requests in flight and, while a
    delay applies (``delay_seconds``, robots.txt ``Crawl-delay``, a 429/503 ``Retry-After``),
    one request at a time with ``delay`` seconds between the end of one and the start of the
    next. Measuring from the end (not from the previous start) keeps the promise at the
    server's side even when a request of ours leaves late (a busy event loop, a slow answer).
    """

    def __init__(self, concurrency: int, delay: float) -> None:
        self.sem = asyncio.Semaphore(concurrency)
        self.delay = delay
        self._last_end = float("-inf")
        self._not_before = 0.0
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self.sem:
            if self.delay <= 0 and self._not_before <= time.monotonic():
                try:
                    yield
                finally:  # a delay learnt meanwhile (robots.txt) counts from this request too
                    self._last_end = max(self._last_end, time.monotonic())
                return
            async with self._lock:
                wait = max(self._last_end + self.delay, self._not_before) - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    yield
                finally:
                    self._last_end = time.monotonic()

    def back_off(self, seconds: float) -> None:
        """The host asked us to slow down (429/503 Retry-After): no new request before then."""
        self._not_before = max(self._not_before, time.monotonic() + seconds)


RobotsLookup = Callable[[str], Awaitable[Robots]]
ScopeCheck = Callable[[str], str | None]


class Fetcher:
    def __init__(
        self,
        client: httpx.AsyncClient,
        policy: AddressPolicy,
        *,
        gate: Callable[[str], HostGate],
        robots: RobotsLookup | None,
        scope: ScopeCheck,
        max_bytes: int,
        timeout: float,
    ) -> None:
        self.client = client
        self.policy = policy
        self.gate = gate
        self.robots = robots
        self.scope = scope
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        try:
            return await asyncio.wait_for(self._fetch(url, etag, last_modified), self.timeout)
        except TimeoutError:
            return FetchResult(url, "retry", error=f"timed out after {self.timeout:g} s")

    async def _fetch(self, url: str, etag: str | None, last_modified: str | None) -> FetchResult:
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            refused = await self._refusal(url, current)
            if refused is not None:
                return refused
            headers = {}
            if current == url:  # validators belong to the URL they were stored for
                if etag:
                    headers["If-None-Match"] = etag
                if last_modified:
                    headers["If-Modified-Since"] = last_modified
            host = urlsplit(current).netloc
            gate = self.gate(host)
            try:
                async with gate.slot(), self.client.stream("GET", current, headers=headers) as resp:
                    if resp.is_redirect and resp.headers.get("location"):
                        # follow the raw location (``/docs`` -> ``/docs/`` is a hop, not a loop);
                        # the normalised form only decides whether it may be followed at all
                        target = urldefrag(urljoin(current, resp.headers["location"].strip()))[0]
                        if normalize_url(target) is None:
                            return FetchResult(
                                url,
                                "failed",
                                status=resp.status_code,
                                error=f"redirect to an unsupported URL: {resp.headers['location'][:200]}",
                            )
                        current = target
                        continue
                    return await self._read(url, current, resp, gate)
            except httpx.HTTPError as exc:
                blocked = blocked_cause(exc)
                if blocked is not None:
                    return FetchResult(url, "failed", final_url=current, error=blocked.message)
                return FetchResult(url, "retry", final_url=current, error=_network_error(exc))
            except BlockedAddress as exc:
                return FetchResult(url, "failed", final_url=current, error=exc.message)
        return FetchResult(url, "failed", error=f"more than {MAX_REDIRECTS} redirects")

    async def _refusal(self, url: str, current: str) -> FetchResult | None:
        """Checks made before connecting, on the first request and on every redirect hop."""
        try:
            precheck_url(current, self.policy)
        except BlockedAddress as exc:
            return FetchResult(url, "failed", final_url=current, error=exc.message)
        if current != url:
            reason = self.scope(normalize_url(current) or current)
            if reason:
                return FetchResult(
                    url, "skipped", final_url=current, error=f"redirects to {current}: {reason}"
                )
        if self.robots is not None and not (robots := await self.robots(current)).allows(current):
            return FetchResult(
                url, "skipped", final_url=current, error=robots.reason or "disallowed by robots.txt"
            )
        return None

    async def _read(self, url: str, final: str, resp: httpx.Response, gate: HostGate) -> FetchResult:
        status = resp.status_code

        def result(
            outcome: Outcome, error: str | None = None, retry_after: float | None = None
        ) -> FetchResult:
            return FetchResult(
                url, outcome, final_url=final, status=status, error=error, retry_after=retry_after
            )

        if status == 304:
            return result("not_modified")
        if status in (404, 410):
            return result("gone", f"HTTP {status} {resp.reason_phrase}")
        if status == 429 or status >= 500:
            retry_after = _retry_after(resp.headers.get("retry-after"))
            if retry_after:
                gate.back_off(min(retry_after, 300.0))
            return result("retry", f"HTTP {status} {resp.reason_phrase}", retry_after)
        if status >= 400 or status < 200:
            return result("failed", f"HTTP {status} {resp.reason_phrase}")
        declared = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if declared and declared not in DOCUMENT_TYPES and declared != "application/octet-stream":
            return result("skipped", f"not a page or document ({declared})")
        length = resp.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            return result("failed", self._too_big())
        chunks: list[bytes] = []
        size = 0
        async for piece in resp.aiter_bytes():
            size += len(piece)
            if size > self.max_bytes:
                return result("failed", self._too_big())
            chunks.append(piece)
        body = b"".join(chunks)
        media_type = _media_type(body, final, declared)
        if media_type is None:
            return result("skipped", f"not a page or document ({declared or 'unknown type'})")
        found = result("ok")
        found.body, found.media_type = body, media_type
        found.etag, found.last_modified = resp.headers.get("etag"), resp.headers.get("last-modified")
        return found

    def _too_big(self) -> str:
        return f"larger than the {self.max_bytes} byte cap (LOREBASE_CRAWL__MAX_PAGE_BYTES)"


def _media_type(body: bytes, url: str, declared: str) -> str | None:
    """Magic bytes first (a PDF served as text/html is a PDF), then the server's declared type."""
    head = body[:8]
    if (
        head.startswith(b"%PDF-")
        or head.startswith(b"PK\x03\x04")
        or declared in ("", "application/octet-stream")
    ):
        try:
            # no zip inspection here: a crawled zip bomb fails its document in the DOCX parser
            name = urlsplit(url).path.rsplit("/", 1)[-1]
            found = detect_media_type(body, name, declared or None, limits=None)
        except UnsupportedMediaType:
            return None
        return found if found in DOCUMENT_TYPES else None
    if declared in PAGE_TYPES:
        return "text/html"
    return declared if declared in FILE_TYPES else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _network_error(exc: httpx.HTTPError) -> str:
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({kind})"
    detail = str(exc) or kind
    return f"network error: {detail}"[:500]
