"""A real HTTP server on loopback that serves a directory as a website, for crawl tests.

``StaticSite`` serves files (with ``Last-Modified``/``If-Modified-Since`` from the standard
library's handler, plus an ``ETag``), an optional generated ``/sitemap.xml`` listing every HTML
file, an optional ``robots.txt`` text, per-path redirects and per-request latency, and records
every request path it answered so that tests can check what the crawler fetched.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class _Handler(SimpleHTTPRequestHandler):
    site: StaticSite

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        site = self.site
        path = urlsplit(self.path).path
        with site.lock:
            site.requests.append(path)
            site.log.append((time.monotonic(), path, dict(self.headers.items())))
            failure = site.fail_once.pop(path, None)
        if site.latency:
            time.sleep(site.latency)
        if failure is not None:
            self.send_response(failure)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path in site.redirects:
            self.send_response(301)
            self.send_header("Location", site.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/robots.txt" and site.robots is not None:
            return self._send(200, "text/plain", site.robots.encode())
        if path == "/sitemap.xml" and site.sitemap:
            return self._send(200, "application/xml", site.sitemap_xml())
        if site.etags and not path.endswith("/"):
            file = Path(self.translate_path(self.path))
            if file.is_file():
                etag = site.etag_of(file)
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
        super().do_GET()

    def end_headers(self) -> None:
        if self.site.etags and self.command == "GET":
            file = Path(self.translate_path(self.path))
            if file.is_file() and not self._headers_buffer_has("ETag"):
                self.send_header("ETag", self.site.etag_of(file))
        super().end_headers()

    def _headers_buffer_has(self, name: str) -> bool:
        prefix = f"{name}:".lower().encode()
        return any(line.lower().startswith(prefix) for line in getattr(self, "_headers_buffer", []))

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StaticSite:
    def __init__(
        self,
        root: Path,
        *,
        sitemap: bool = False,
        robots: str | None = None,
        latency: float = 0.0,
        etags: bool = True,
        redirects: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.root = Path(root)
        self.sitemap = sitemap
        self.robots = robots
        self.latency = latency
        self.etags = etags
        self.redirects = dict(redirects or {})
        self.requests: list[str] = []
        #: (monotonic time, path, request headers) of every request, in arrival order
        self.log: list[tuple[float, str, dict[str, str]]] = []
        #: path -> HTTP status answered once (with ``Retry-After: 1``) before serving normally
        self.fail_once: dict[str, int] = {}
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"site": self})
        self.server = ThreadingHTTPServer((host, 0), partial(handler, directory=str(self.root)))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> StaticSite:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def html_files(self) -> list[str]:
        """Site paths of every HTML file, sorted (``/library/json.html``)."""
        return sorted(
            "/" + str(p.relative_to(self.root)).replace(os.sep, "/") for p in self.root.rglob("*.html")
        )

    def sitemap_xml(self) -> bytes:
        urls = "".join(f"<url><loc>{self.url}{path}</loc></url>" for path in self.html_files())
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
        ).encode()

    @staticmethod
    def etag_of(file: Path) -> str:
        st = file.stat()
        return '"' + hashlib.sha1(f"{st.st_mtime_ns}-{st.st_size}".encode()).hexdigest()[:16] + '"'

    def hits(self) -> Counter[str]:
        with self.lock:
            return Counter(self.requests)


@contextmanager
def serve(root: Path, **kwargs: Any) -> Iterator[StaticSite]:
    site = StaticSite(root, **kwargs).start()
    try:
        yield site
    finally:
        site.stop()
