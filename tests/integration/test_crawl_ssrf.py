"""The SSRF defence as a user meets it: a crawl of an allowed site whose links (and one
redirect) point at refused addresses. Each refused page becomes a failed document with a clear
error, and the trap servers on loopback never see a connection.

The allowed site is served on 127.0.0.2 and allow-listed by address
(``LOREBASE_CRAWL__ALLOWED_HOSTS=127.0.0.2``); everything else on loopback stays refused.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import key_headers, make_settings, wait_pipeline
from lorebase.app import create_app
from lorebase.crawl.guard import system_resolver
from lorebase.crawl.job import CrawlSource
from lorebase.crawl.urls import normalize_url
from support.site import serve


class _Trap(ThreadingHTTPServer):
    """Counts every TCP connection it accepts; answers 200 to anything that gets through."""

    daemon_threads = True

    def __init__(self, family: socket.AddressFamily, host: str, port: int) -> None:
        self.address_family = family
        self.connections = 0
        self._lock = threading.Lock()
        super().__init__((host, port), _TrapHandler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._lock:
            self.connections += 1
        return True


class _TrapHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body><main><p>internal secrets</p></main></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def traps() -> Iterator[list[_Trap]]:
    """A trap on 127.0.0.1 and, on the same port when the machine has IPv6, one on ::1."""
    v4 = _Trap(socket.AF_INET, "127.0.0.1", 0)
    servers = [v4]
    with contextlib.suppress(OSError):
        servers.append(_Trap(socket.AF_INET6, "::1", v4.server_address[1]))
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield servers
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _refused_links(port: int) -> dict[str, str]:
    """Link → the category the error must name."""
    return {
        f"http://127.0.0.1:{port}/admin": "loopback",
        f"http://localhost:{port}/admin": "loopback",
        f"http://[::1]:{port}/admin": "loopback",
        "http://10.0.0.1/": "private",
        "http://172.16.0.1/": "private",
        "http://192.168.1.1/": "private",
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "http://100.64.0.1/": "shared address space",
        f"http://0.0.0.0:{port}/": "unspecified",
        f"http://[::ffff:127.0.0.1]:{port}/": "loopback",
        f"http://2130706433:{port}/": "loopback",
        f"http://0177.0.0.1:{port}/": "loopback",
        f"http://intranet.test:{port}/wiki": "private",  # resolves to 10.20.30.40 (see _resolver)
    }


async def _resolver(host: str, port: int) -> list[str]:
    """DNS cannot be controlled here: one name is made to resolve to a private address."""
    if host == "intranet.test":
        return ["10.20.30.40"]
    return await system_resolver(host, port)


def test_refused_addresses_fail_their_documents_before_any_connection(
    tmp_path: Path, traps: list[_Trap], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = traps[0].server_address[1]
    refused = _refused_links(port)
    root = tmp_path / "site"
    root.mkdir()
    links = [*refused, "/go-internal", "/fine.html"]
    nav = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    (root / "index.html").write_text(
        f"<html><head><title>Hub</title></head><body><main><h1>Hub</h1><ul>{nav}</ul></main></body></html>"
    )
    (root / "fine.html").write_text(
        "<html><head><title>Fine</title></head><body><main><p>An allowed page about otters.</p></main></body></html>"
    )
    monkeypatch.setattr(CrawlSource, "resolver", staticmethod(_resolver))
    redirect_target = f"http://127.0.0.1:{port}/secret"
    settings = make_settings(tmp_path / "data", crawl={"allowed_hosts": "127.0.0.2"})
    with (
        serve(root, host="127.0.0.2", redirects={"/go-internal": redirect_target}) as site,
        TestClient(create_app(settings, workers=2)) as client,
    ):
        h = key_headers(client)
        d = client.post("/api/v1/kb-drafts", json={"name": "ssrf"}, headers=h).json()["id"]
        body = {
            "type": "web",
            "url": f"{site.url}/index.html",
            "crawl": {"same_domain": False, "max_depth": 1},
        }
        assert client.post(f"/api/v1/kb-drafts/{d}/sources", json=body, headers=h).status_code == 201
        started = client.post(f"/api/v1/kb-drafts/{d}/finalize", headers=h).json()
        state = wait_pipeline(client, h, started["pipeline_id"], timeout=120)
        items = client.get(f"/api/v1/kbs/{started['kb_id']}/documents?limit=100", headers=h).json()["items"]

    docs = {d["external_id"]: d for d in items}
    assert docs[normalize_url(f"{site.url}/fine.html")]["status"] == "indexed"
    assert docs[normalize_url(f"{site.url}/index.html")]["status"] == "indexed"
    for link, category in refused.items():
        doc = docs.get(normalize_url(link) or link)
        assert doc is not None, (link, sorted(docs))
        assert doc["status"] == "failed" and doc["error_kind"] == "permanent", doc
        assert "refused" in doc["error"] and category in doc["error"], (link, doc["error"])
        assert "ALLOW_PRIVATE_NETWORKS" in doc["error"]  # the error says how to open it up
    hop = docs[normalize_url(f"{site.url}/go-internal")]
    assert hop["status"] == "failed" and "refused" in hop["error"] and "loopback" in hop["error"], hop
    assert len(items) == len(refused) + 3
    assert state["status"] == "completed_with_errors"
    assert [t.connections for t in traps] == [0] * len(traps)  # nothing reached the traps
