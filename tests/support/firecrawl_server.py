"""A loopback HTTP server that speaks Firecrawl's crawl API (v1), so tests cross a real socket.

It serves a fixed set of pages ``{url: (title, markdown)}`` and behaves like Firecrawl's v1
status controller where a client can tell: the bearer key is checked (401), ``includePaths`` /
``excludePaths`` regexes are applied to each URL's path and ``limit`` caps the pages, a crawl
answers ``scraping`` (with a growing share of pages, ``next`` always present) for the first
``polls_before_done`` status GETs and then ``completed`` (or ``final_status``), ``data`` is cut
into ``page_size`` entries with an absolute ``next`` URL carrying ``skip``, and DELETE cancels.
``maxDepth`` is recorded but not simulated (there are no links between the pages).

A "status GET" is a GET without a ``skip`` parameter; following ``next`` does not advance time.
Faults are queued with :meth:`FakeFirecrawl.fail_once` and answer the next request, whatever it is.

Usage::

    fake = FakeFirecrawl({"https://site.test/a": ("A", "# A")}, page_size=2)
    with fake as base_url:
        ...  # FirecrawlClient(base_url, fake.api_key); then assert on fake.requests
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or None

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


@dataclass
class _Crawl:
    urls: list[str]
    polls: int = 0
    cancelled: bool = False


@dataclass(frozen=True)
class _Fault:
    status: int
    error: str
    retry_after: int | None


@dataclass
class _State:
    crawls: dict[str, _Crawl] = field(default_factory=dict)
    faults: list[_Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)


class FakeFirecrawl:
    """The fake Firecrawl; a context manager that starts it and yields its base URL."""

    def __init__(
        self,
        pages: Mapping[str, tuple[str, str]],
        *,
        api_key: str = "fc-test-key-0123456789",
        polls_before_done: int = 2,
        page_size: int = 10,
        final_status: str = "completed",
        page_errors: Mapping[str, tuple[int, str]] | None = None,
    ) -> None:
        self.pages = dict(pages)
        self.api_key = api_key
        self.polls_before_done = polls_before_done
        self.page_size = page_size
        self.final_status = final_status
        #: pages that Firecrawl "scraped" with an error: ``{url: (statusCode, error)}``
        self.page_errors = dict(page_errors or {})
        #: when set, ``next`` URLs point at this base instead of the server's own (origin tests)
        self.next_base_url: str | None = None
        self._state = _State()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- test-facing API -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the fake Firecrawl is not running"
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def fail_once(self, status: int, *, retry_after: int | None = None, error: str | None = None) -> None:
        """Answer the next request with ``status`` (and ``Retry-After`` when given), once."""
        with self._lock:
            self._state.faults.append(_Fault(status, error or f"simulated HTTP {status}", retry_after))

    def __enter__(self) -> str:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-firecrawl", daemon=True
        )  # a short poll interval keeps shutdown (and so each test) fast
        self._thread.start()
        return self.base_url

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- protocol ------------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        """One request in, ``(status, extra headers, JSON answer)`` out."""
        with self._lock:
            self._state.requests.append(RecordedRequest(method, path, headers, body))
            if self._state.faults:
                fault = self._state.faults.pop(0)
                extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                return fault.status, extra, {"success": False, "error": fault.error}
            if headers.get("authorization") != f"Bearer {self.api_key}":
                return 401, {}, {"success": False, "error": "Unauthorized: Invalid token"}
            parts = urlsplit(path)
            route = parts.path.rstrip("/").split("/")
            if route[:3] != ["", "v1", "crawl"] or len(route) > 4:
                return 404, {}, {"success": False, "error": f"Cannot {method} {parts.path}"}
            if len(route) == 3:
                return (
                    self._start(body)
                    if method == "POST"
                    else (405, {}, {"success": False, "error": "Method"})
                )
            crawl = self._state.crawls.get(route[3])
            if crawl is None:
                return 404, {}, {"success": False, "error": "Job not found"}
            if method == "DELETE":
                crawl.cancelled = True
                return 200, {}, {"status": "cancelled"}
            if method == "GET":
                return 200, {}, self._status(route[3], crawl, parse_qs(parts.query))
            return 405, {}, {"success": False, "error": "Method not allowed"}

    def _start(self, body: Any) -> tuple[int, dict[str, str], Any]:
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return 400, {}, {"success": False, "error": "Bad Request", "details": [{"path": ["url"]}]}
        try:
            include = [re.compile(p) for p in body.get("includePaths") or []]
            exclude = [re.compile(p) for p in body.get("excludePaths") or []]
        except re.error as exc:
            return 400, {}, {"success": False, "error": f"Bad Request: invalid regex ({exc})"}
        limit = body.get("limit", 10_000)
        urls = [
            url
            for url in self.pages
            if (not include or any(p.search(urlsplit(url).path) for p in include))
            and not any(p.search(urlsplit(url).path) for p in exclude)
        ][:limit]
        crawl_id = str(uuid.uuid4())
        self._state.crawls[crawl_id] = _Crawl(urls)
        return 200, {}, {"success": True, "id": crawl_id, "url": f"{self.base_url}/v1/crawl/{crawl_id}"}

    def _status(self, crawl_id: str, crawl: _Crawl, query: dict[str, list[str]]) -> dict[str, Any]:
        skip = int(query.get("skip", ["0"])[0])
        if "skip" not in query:
            crawl.polls += 1
        steps = self.polls_before_done + 1
        done = len(crawl.urls) * min(crawl.polls, steps) // steps  # pages scraped so far
        if crawl.cancelled:
            status = "cancelled"
        elif crawl.polls < steps:
            status = "scraping"
        else:
            status = self.final_status
        data = [self._document(url) for url in crawl.urls[:done][skip : skip + self.page_size]]
        answer: dict[str, Any] = {
            "success": True,
            "status": status,
            "total": len(crawl.urls),
            "completed": done,
            "creditsUsed": done,
            "expiresAt": "2099-01-01T00:00:00.000Z",
            "data": data,
        }
        if status == "scraping" or skip + len(data) < done:  # as Firecrawl: always while scraping
            answer["next"] = (
                f"{self.next_base_url or self.base_url}/v1/crawl/{crawl_id}?skip={skip + len(data)}"
            )
        if status == "failed":
            answer["error"] = "simulated crawl failure"
        return answer

    def _document(self, url: str) -> dict[str, Any]:
        title, markdown = self.pages[url]
        metadata: dict[str, Any] = {"title": title, "sourceURL": url, "url": url, "statusCode": 200}
        if url in self.page_errors:
            metadata["statusCode"], metadata["error"] = self.page_errors[url]
            markdown = ""
        return {"markdown": markdown, "metadata": metadata}


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeFirecrawl

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, answer = self.server_fake.handle(self.command, self.path, headers, body)
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""
