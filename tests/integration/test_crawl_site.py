"""Web sources end to end on a small real site served on loopback: scope, robots, canonical
URLs, duplicates, linked files, broken links, retries, refresh and the Firecrawl engine."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import key_headers, make_settings, wait_pipeline
from factories import docx_bytes, pdf_bytes
from lorebase.app import create_app
from lorebase.db.models import CrawlPage
from support.firecrawl_server import FakeFirecrawl
from support.site import serve

CRAWL_DELAY = 0.3


def _page(title: str, body: str, *, head: str = "", links: list[str] | None = None) -> str:
    nav = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links or [])
    return (
        f"<!doctype html><html><head><title>{title}</title>{head}</head><body>"
        f'<nav class="sidebar"><ul>{nav}</ul></nav>'
        f'<main><h1 id="top">{title}</h1>{body}</main>'
        "<footer>Footer of every page</footer></body></html>"
    )


HISTORY = " ".join(
    f"In the year {1500 + i} herders of the Andes bred camelids in valley number {i} for transport and cloth."
    for i in range(20)
)
ALPACA = (
    f'<h2 id="history">History</h2><p>{HISTORY}</p>'
    '<h2 id="shearing">Shearing alpacas</h2><p>Alpacas are shorn once a year in spring; the fleece '
    "of one animal weighs about three kilograms and is finer than sheep wool.</p>"
)
INDEX_LINKS = [
    "alpaca.html",
    "alpaca.html?utm_source=newsletter#shearing",  # the same page spelt differently
    "copy-of-alpaca.html",  # byte-identical content
    "canonical.html",  # declares alpaca.html canonical
    "herd",  # a directory: /herd -> 301 /herd/
    "private/ledger.html",  # robots.txt disallows /private/
    "missing.html",  # a broken link
    "flaky.html",  # answers 503 once
    "noindex.html",
    "photo.png",  # never requested: not a page
    "files/handbook.pdf",
    "files/rota.docx",
    "d1.html",  # a chain d1 -> d2 -> d3 -> d4: max_depth 3 stops before d4
    "http://elsewhere.invalid/page.html",  # another host: out of scope
    "mailto:farm@example.com",
]


def build_site(root: Path) -> None:
    (root / "herd").mkdir(parents=True)
    (root / "private").mkdir()
    (root / "files").mkdir()
    (root / "index.html").write_text(
        _page("Farm handbook", "<p>Everything about the farm.</p>", links=INDEX_LINKS)
    )
    alpaca = _page("Alpacas", ALPACA, links=["index.html"])
    (root / "alpaca.html").write_text(alpaca)
    (root / "copy-of-alpaca.html").write_text(alpaca)
    (root / "canonical.html").write_text(
        _page("Alpacas (print)", ALPACA, head='<link rel="canonical" href="/alpaca.html">')
    )
    (root / "herd" / "index.html").write_text(
        _page(
            "The herd",
            "<p>Twelve llamas graze the upper meadow next to the barn.</p>",
            links=["../index.html"],
        )
    )
    (root / "private" / "ledger.html").write_text(_page("Ledger", "<p>Secret numbers.</p>"))
    (root / "flaky.html").write_text(
        _page("Weather", "<p>Frost arrives in late October on the upper meadow.</p>")
    )
    (root / "noindex.html").write_text(
        _page("Drafts", "<p>Not for the index.</p>", head='<meta name="robots" content="noindex">')
    )
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (root / "files" / "handbook.pdf").write_bytes(
        pdf_bytes(["Goats must be milked twice a day, at six in the morning and six in the evening."])
    )
    (root / "files" / "rota.docx").write_bytes(
        docx_bytes("Rota", [("Feeding", "The chickens are fed by whoever opens the henhouse at dawn.")])
    )
    for i in range(1, 5):
        nxt = [f"d{i + 1}.html"] if i < 4 else []
        (root / f"d{i}.html").write_text(
            _page(f"Depth {i}", f"<p>Page at depth {i} of the chain.</p>", links=nxt)
        )


ROBOTS = f"User-agent: *\nDisallow: /private/\nCrawl-delay: {CRAWL_DELAY}\n"


def _client(tmp_path: Path, **crawl: Any) -> TestClient:
    settings = make_settings(tmp_path / "data", crawl={"allow_private_networks": True, **crawl})
    return TestClient(create_app(settings, workers=2))


def _finalize_web(
    client: TestClient,
    h: dict[str, str],
    url: str,
    crawl: dict[str, Any],
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    d = client.post("/api/v1/kb-drafts", json={"name": "farm", "config": config}, headers=h).json()["id"]
    r = client.post(
        f"/api/v1/kb-drafts/{d}/sources", json={"type": "web", "url": url, "crawl": crawl}, headers=h
    )
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/kb-drafts/{d}/finalize", headers=h)
    assert r.status_code == 202, r.text
    return dict(r.json())


def _documents(client: TestClient, h: dict[str, str], kb_id: str, base: str) -> dict[str, dict[str, Any]]:
    items = client.get(f"/api/v1/kbs/{kb_id}/documents?limit=1000", headers=h).json()["items"]
    return {d["external_id"].removeprefix(base): d for d in items}


def _search(client: TestClient, h: dict[str, str], kb_id: str, query: str) -> list[dict[str, Any]]:
    r = client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": query, "top_k": 5}, headers=h)
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


def test_a_small_site_is_crawled_within_scope_politely_and_refreshed_incrementally(tmp_path: Path) -> None:
    root = tmp_path / "site"
    build_site(root)
    with serve(root, robots=ROBOTS) as site, _client(tmp_path) as client:
        site.fail_once["/flaky.html"] = 503
        h = key_headers(client)
        started = _finalize_web(
            client,
            h,
            f"{site.url}/index.html",
            {"max_depth": 3, "concurrency": 2},
            {"chunking": {"strategy": "structure"}},  # chunks start at headings: one section each
        )
        state = wait_pipeline(client, h, started["pipeline_id"], timeout=240)
        kb_id = started["kb_id"]
        docs = _documents(client, h, kb_id, site.url)

        # exactly one document per in-scope page; the broken link is a failed document
        assert set(docs) == {
            "/index.html",
            "/alpaca.html",
            "/herd",
            "/missing.html",
            "/flaky.html",
            "/files/handbook.pdf",
            "/files/rota.docx",
            "/d1.html",
            "/d2.html",
            "/d3.html",
        }, sorted(docs)
        assert docs["/missing.html"]["status"] == "failed"
        assert "404" in docs["/missing.html"]["error"]
        assert all(d["status"] == "indexed" for k, d in docs.items() if k != "/missing.html"), docs
        assert state["status"] == "completed_with_errors", state
        counts = state["counts"]
        # 14 pages: 13 answered (the robots-disallowed one never asked), 4 led to no document
        # (robots, duplicate, canonical, noindex)
        assert (counts["pages_discovered"], counts["pages_fetched"], counts["pages_skipped"]) == (
            14,
            13,
            4,
        ), counts
        assert counts["documents_failed"] == 1 and counts["chunks_embedded"] > 0

        hits = site.hits()
        # robots.txt disallow, non-pages and out-of-scope / too-deep pages are never requested
        for never in ("/private/ledger.html", "/photo.png", "/d4.html"):
            assert hits[never] == 0, never
        # no page is fetched twice (the 503 page once more, after its Retry-After)
        assert {p: n for p, n in hits.items() if n > 1} == {"/flaky.html": 2}, hits
        # Crawl-delay: consecutive requests reach the server at least the delay apart (unpaced: ~0.01 s)
        starts = [t for t, path, _ in site.log]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= CRAWL_DELAY * 0.98, gaps

        # why pages were skipped is recorded on the frontier
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        with runtime.db.read_session() as s:
            pages = {p.url.removeprefix(site.url): p for p in s.execute(select(CrawlPage)).scalars()}
        assert "robots.txt" in (pages["/private/ledger.html"].error or "")
        assert "same content as" in (pages["/copy-of-alpaca.html"].error or "")
        assert "canonical" in (pages["/canonical.html"].error or "")
        assert "noindex" in (pages["/noindex.html"].error or "")

        # results link to the page and the section
        top = _search(client, h, kb_id, "how much fleece does one alpaca give when shorn")[0]
        assert top["url"] == f"{site.url}/alpaca.html"
        assert top["metadata"]["anchor"] == "shearing" and "Shearing alpacas" in top["metadata"]["section"]
        assert "Footer of every page" not in top["text"]
        assert _search(client, h, kb_id, "when are goats milked")[0]["url"].endswith("/files/handbook.pdf")
        assert _search(client, h, kb_id, "who feeds the chickens")[0]["url"].endswith("/files/rota.docx")

        # refresh of the unchanged site: conditional requests, nothing parsed or embedded
        before = len(site.log)
        r = client.post(f"/api/v1/kbs/{kb_id}/refresh", headers=h)
        assert r.status_code == 202, r.text
        again = wait_pipeline(client, h, r.json()["pipeline_id"], timeout=120)
        assert again["counts"]["chunks_embedded"] == 0 and again["counts"]["chunks_created"] == 0, again
        # only the still-broken link is reported, and the KB keeps serving everything else
        assert again["status"] == "completed_with_errors" and again["counts"]["documents_failed"] == 1, again
        assert "pages fetched" in again["message"], again
        refreshed = [(path, headers) for _, path, headers in site.log[before:]]
        conditional = [p for p, hd in refreshed if "If-None-Match" in hd or "If-Modified-Since" in hd]
        assert "/alpaca.html" in conditional and "/files/handbook.pdf" in conditional

        # one page edited, one removed: exactly that one re-processed, the other leaves the KB
        time.sleep(1.1)  # Last-Modified has one-second resolution
        (root / "alpaca.html").write_text(
            _page("Alpacas", ALPACA.replace("three kilograms", "four kilograms"), links=["index.html"])
        )
        shutil.rmtree(root / "herd")
        r = client.post(f"/api/v1/kbs/{kb_id}/refresh", headers=h)
        changed = wait_pipeline(client, h, r.json()["pipeline_id"], timeout=120)
        assert changed["counts"]["documents_total"] == 2, changed  # alpaca + the still-broken link
        docs_after = _documents(client, h, kb_id, site.url)
        assert "/herd" not in docs_after
        assert docs_after["/alpaca.html"]["status"] == "indexed"
        assert docs_after["/index.html"]["updated_at"] == docs["/index.html"]["updated_at"]
        top = _search(client, h, kb_id, "alpaca fleece weight")[0]
        assert "four kilograms" in top["text"]
        assert not any(
            "llamas" in res["text"] for res in _search(client, h, kb_id, "llamas graze the meadow")
        )


def test_max_pages_caps_the_crawl_and_include_exclude_globs_scope_it(tmp_path: Path) -> None:
    root = tmp_path / "site"
    build_site(root)
    with serve(root) as site, _client(tmp_path) as client:
        h = key_headers(client)
        crawl = {"max_pages": 4, "exclude": ["/files/*", "*.docx"], "use_sitemap": False}
        started = _finalize_web(client, h, f"{site.url}/index.html", crawl)
        state = wait_pipeline(client, h, started["pipeline_id"], timeout=120)
        assert state["counts"]["pages_discovered"] == 4, state
        assert not any(p.startswith("/files/") for p in site.hits())

        h2 = key_headers(client)
        only = _finalize_web(client, h2, f"{site.url}/index.html", {"include": ["/d*.html"], "max_depth": 1})
        wait_pipeline(client, h2, only["pipeline_id"], timeout=120)
        docs = _documents(client, h2, only["kb_id"], site.url)
        assert set(docs) == {"/index.html", "/d1.html"}, sorted(docs)


def test_a_web_source_added_to_a_ready_kb_crawls_into_it(
    tmp_path: Path, api: TestClient, auth: dict[str, str]
) -> None:
    root = tmp_path / "site"
    build_site(root)
    r = api.post("/api/v1/kb-drafts", json={"name": "mixed"}, headers=auth)
    d = r.json()["id"]
    body = {"type": "text", "documents": [{"external_id": "note", "text": "Bees make honey from nectar."}]}
    api.post(f"/api/v1/kb-drafts/{d}/sources", json=body, headers=auth)
    first = api.post(f"/api/v1/kb-drafts/{d}/finalize", headers=auth).json()
    wait_pipeline(api, auth, first["pipeline_id"])
    kb_id = first["kb_id"]
    r = api.post(f"/api/v1/kbs/{kb_id}/refresh", headers=auth)
    assert r.status_code == 422 and "no web sources" in r.json()["error"]["message"]
    runtime = api.app.state.runtime  # type: ignore[attr-defined]
    runtime.settings.crawl.allow_private_networks = True
    with serve(root) as site:
        r = api.post(
            f"/api/v1/kbs/{kb_id}/sources",
            json={"type": "web", "url": f"{site.url}/d1.html", "crawl": {"max_depth": 1}},
            headers=auth,
        )
        assert r.status_code == 202, r.text
        assert r.json()["source"]["url"] == f"{site.url}/d1.html"
        wait_pipeline(api, auth, r.json()["pipeline_id"])
    docs = _documents(api, auth, kb_id, site.url)
    assert set(docs) == {"note", "/d1.html", "/d2.html"}
    r = api.post(f"/api/v1/kbs/{kb_id}/sources", json={"type": "web", "url": "gopher://x"}, headers=auth)
    assert r.status_code == 422


PAGES = {
    f"https://spa.example/docs/{name}": (title, f"# {title}\n\n{text}\n")
    for name, title, text in [
        ("install", "Install", "Run the installer and accept the licence to install the app."),
        ("widgets", "Widgets", "Widgets render only after the JavaScript bundle has loaded."),
        ("billing", "Billing", "Invoices are sent on the first working day of each month."),
        ("faq", "FAQ", "Most questions are answered by restarting the browser tab."),
        ("api", "API", "The REST API accepts JSON and answers with JSON."),
    ]
}


def test_the_firecrawl_engine_feeds_the_same_pipeline_and_refreshes_incrementally(tmp_path: Path) -> None:
    fake = FakeFirecrawl(PAGES, page_size=2, polls_before_done=1)
    with fake as base_url:
        settings = make_settings(
            tmp_path / "data", crawl={"firecrawl_url": base_url, "firecrawl_api_key": fake.api_key}
        )
        with TestClient(create_app(settings, workers=2)) as client:
            h = key_headers(client)
            crawl = {"engine": "firecrawl", "max_pages": 50, "include": ["/docs/*"]}
            started = _finalize_web(client, h, "https://spa.example/docs/", crawl)
            state = wait_pipeline(client, h, started["pipeline_id"], timeout=120)
            assert state["status"] == "completed", state
            docs = _documents(client, h, started["kb_id"], "https://spa.example")
            assert set(docs) == {f"/docs/{n}" for n in ("install", "widgets", "billing", "faq", "api")}
            assert all(d["source_type"] == "web" for d in docs.values())
            top = _search(client, h, started["kb_id"], "when are invoices sent")[0]
            assert top["url"] == "https://spa.example/docs/billing" and top["title"] == "Billing"
            posts = [r for r in fake.requests if r.method == "POST"]
            assert len(posts) == 1 and posts[0].body["limit"] == 50
            assert posts[0].body["scrapeOptions"]["formats"] == ["markdown"]

            r = client.post(f"/api/v1/kbs/{started['kb_id']}/refresh", headers=h)
            again = wait_pipeline(client, h, r.json()["pipeline_id"], timeout=120)
            assert again["status"] == "completed" and again["counts"]["chunks_embedded"] == 0, again


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    from lorebase.crawl import firecrawl_job

    monkeypatch.setattr(firecrawl_job, "POLL_SECONDS", 0.2)


def _flat_site(root: Path, n: int) -> None:
    root.mkdir(parents=True)
    links = "".join(f'<li><a href="p{i}.html">page {i}</a></li>' for i in range(n))
    (root / "index.html").write_text(f"<html><body><main><h1>Index</h1><ul>{links}</ul></main></body></html>")
    for i in range(n):
        (root / f"p{i}.html").write_text(
            f"<html><head><title>Page {i}</title></head><body><main><p>Page number {i} is about "
            f"topic {i * 7919 % 1000}.</p></main></body></html>"
        )


def _wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_pause_mid_crawl_stops_fetching_and_resume_goes_on_without_refetching(tmp_path: Path) -> None:
    _flat_site(tmp_path / "site", 14)
    with serve(tmp_path / "site", latency=0.15) as site, _client(tmp_path) as client:
        h = key_headers(client)
        started = _finalize_web(client, h, f"{site.url}/index.html", {"concurrency": 1, "use_sitemap": False})
        pid = started["pipeline_id"]

        def fetched() -> int:
            return int(client.get(f"/api/v1/pipelines/{pid}", headers=h).json()["counts"]["pages_fetched"])

        _wait_for(lambda: fetched() >= 4)
        assert client.post(f"/api/v1/pipelines/{pid}/pause", headers=h).status_code == 200
        _wait_for(lambda: client.get(f"/api/v1/pipelines/{pid}", headers=h).json()["status"] == "paused")
        time.sleep(0.5)  # the request in flight at the pause finishes
        during = len(site.requests)
        time.sleep(1.5)
        assert len(site.requests) == during, "no page is fetched while the pipeline is paused"
        assert fetched() < 15

        assert client.post(f"/api/v1/pipelines/{pid}/resume", headers=h).status_code == 200
        state = wait_pipeline(client, h, pid, timeout=120)
        assert state["status"] == "completed", state
        docs = _documents(client, h, started["kb_id"], site.url)
        assert len(docs) == 15 and all(d["status"] == "indexed" for d in docs.values())
        refetched = {p: n for p, n in site.hits().items() if n > 1 and p.endswith(".html")}
        assert sum(n - 1 for n in refetched.values()) <= 1, refetched  # at most the one in flight


def test_cancel_mid_crawl_stops_it_and_leaves_a_usable_kb(tmp_path: Path) -> None:
    _flat_site(tmp_path / "site", 14)
    with serve(tmp_path / "site", latency=0.15) as site, _client(tmp_path) as client:
        h = key_headers(client)
        started = _finalize_web(client, h, f"{site.url}/index.html", {"concurrency": 1, "use_sitemap": False})
        pid, kb_id = started["pipeline_id"], started["kb_id"]
        _wait_for(
            lambda: client.get(f"/api/v1/pipelines/{pid}", headers=h).json()["counts"]["documents_done"] >= 3
        )
        assert client.post(f"/api/v1/pipelines/{pid}/cancel", headers=h).status_code == 200
        state = wait_pipeline(client, h, pid, timeout=60)
        assert state["status"] == "cancelled", state
        time.sleep(0.5)
        after = len(site.requests)
        time.sleep(1.0)
        assert len(site.requests) == after, "the crawl stopped"
        docs = _documents(client, h, kb_id, site.url)
        statuses = {d["status"] for d in docs.values()}
        assert statuses <= {"indexed", "cancelled"} and "indexed" in statuses, statuses
        assert len(docs) < 15
        kb = client.get(f"/api/v1/kbs/{kb_id}", headers=h).json()
        assert kb["status"] == "ready", kb
        r = client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "page number 0", "top_k": 3}, headers=h)
        assert r.status_code == 200 and r.json()["results"]
