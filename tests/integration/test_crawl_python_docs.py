"""A real documentation site crawled through the API: Debian's python3.11-doc (530 pages).

One test, in phases sharing the expensive KB: the first crawl (every page exactly one document,
nothing out of scope, real questions answered by the right page), a refresh of the unchanged
site (nothing embedded, a fraction of the first crawl's time), and a refresh after three pages
are edited on disk (exactly those three re-processed).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import key_headers, make_settings, wait_pipeline
from lorebase.app import create_app
from lorebase.db.models import Document
from support.site import serve

DOCS = Path("/usr/share/doc/python3.11/html")
#: the site links to this page but the package does not ship it: a real broken link
BROKEN = "/whatsnew/changelog.html"
#: question -> pages that answer it (any of them in the top 5 passes)
QUESTIONS = {
    "How do I parse a JSON string into a Python dictionary?": {"/library/json.html"},
    "run an external command and capture its output": {"/library/subprocess.html"},
    "read and write CSV files": {"/library/csv.html"},
    "serialize Python objects to bytes with pickle": {"/library/pickle.html"},
    "parse command line arguments with sub-commands": {"/library/argparse.html", "/howto/argparse.html"},
    "regular expression named groups": {"/library/re.html", "/howto/regex.html"},
}
EDITED = ["/library/json.html", "/tutorial/classes.html", "/howto/sorting.html"]
MARKER = "Zanzibar-otter-sentinel paragraph added to this page by the refresh test."

#: the first crawl embeds ~19,000 chunks: about 16 minutes on 2 cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]


@pytest.fixture(scope="module")
def site_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DOCS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "python3.11-doc is not installed (apt-get install python3.11-doc); .ci/run installs it"
            )
        pytest.skip("python3.11-doc is not installed (apt-get install python3.11-doc)")
    root = tmp_path_factory.mktemp("pydocs") / "html"
    shutil.copytree(
        DOCS, root, ignore=shutil.ignore_patterns("_sources", "_downloads", "*.js", "*.inv", "*.gz")
    )
    return root


def _edit(path: Path) -> None:
    html = path.read_text()
    assert '<div class="body" role="main">' in html
    path.write_text(
        html.replace('<div class="body" role="main">', f'<div class="body" role="main"><p>{MARKER}</p>', 1)
    )


def test_the_python_docs_are_crawled_refreshed_and_refreshed_after_edits(
    tmp_path: Path, site_root: Path
) -> None:
    settings = make_settings(tmp_path / "data", crawl={"allow_private_networks": True})
    with serve(site_root, sitemap=True) as site, TestClient(create_app(settings, workers=2)) as client:
        files = site.html_files()
        assert len(files) == 530
        h = key_headers(client)
        draft = client.post("/api/v1/kb-drafts", json={"name": "python-docs"}, headers=h).json()["id"]
        source = {
            "type": "web",
            "url": f"{site.url}/index.html",
            "crawl": {"max_pages": 1000, "max_depth": 10, "concurrency": 8},
        }
        assert client.post(f"/api/v1/kb-drafts/{draft}/sources", json=source, headers=h).status_code == 201
        t0 = time.monotonic()
        started = client.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=h).json()
        first = wait_pipeline(client, h, started["pipeline_id"], timeout=3000)
        first_seconds = time.monotonic() - t0
        kb_id = started["kb_id"]

        items = client.get(f"/api/v1/kbs/{kb_id}/documents?limit=1000", headers=h).json()["items"]
        by_path = {d["external_id"].removeprefix(site.url): d for d in items}
        assert len(by_path) == len(items)  # one document per URL
        assert all(d["external_id"].startswith(site.url + "/") for d in items)  # nothing out of scope
        indexed = sorted(p for p, d in by_path.items() if d["status"] == "indexed")
        assert indexed == files  # every page of the site, exactly once
        assert {p: d["status"] for p, d in by_path.items() if p not in files} == {BROKEN: "failed"}
        assert "404" in by_path[BROKEN]["error"]
        counts = first["counts"]
        assert first["status"] == "completed_with_errors" and counts["documents_failed"] == 1, first
        assert counts["pages_discovered"] == 531 and counts["chunks_indexed"] == counts["chunks_created"] > 0

        for question, answers in QUESTIONS.items():
            r = client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": question, "top_k": 5}, headers=h)
            urls = [res["url"].removeprefix(site.url) for res in r.json()["results"]]
            assert answers & set(urls), (question, urls)

        # refresh, nothing changed: conditional requests, no parse, no embedding
        t0 = time.monotonic()
        r = client.post(f"/api/v1/kbs/{kb_id}/refresh", headers=h)
        unchanged = wait_pipeline(client, h, r.json()["pipeline_id"], timeout=600)
        refresh_seconds = time.monotonic() - t0
        assert unchanged["counts"]["chunks_embedded"] == 0 and unchanged["counts"]["chunks_created"] == 0
        assert refresh_seconds < 0.1 * first_seconds, (refresh_seconds, first_seconds)

        # three pages edited on disk: exactly those are re-processed
        time.sleep(1.1)  # Last-Modified has one-second resolution
        for path in EDITED:
            _edit(site_root / path.lstrip("/"))
        r = client.post(f"/api/v1/kbs/{kb_id}/refresh", headers=h)
        edited_id = r.json()["pipeline_id"]
        edited = wait_pipeline(client, h, edited_id, timeout=600)
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        with runtime.db.read_session() as s:
            touched = s.execute(
                select(Document.external_id, Document.status).where(Document.pipeline_id == edited_id)
            )
            reprocessed = {url.removeprefix(site.url): status for url, status in touched}
        assert reprocessed == {**dict.fromkeys(EDITED, "indexed"), BROKEN: "failed"}, reprocessed
        edited_chunks = sum(by_path[p]["chunk_count"] for p in EDITED)
        assert 0 < edited["counts"]["chunks_embedded"] <= edited_chunks + 3, edited  # only changed chunks
        r = client.post(
            f"/api/v1/kbs/{kb_id}/search", json={"query": "Zanzibar otter sentinel", "top_k": 3}, headers=h
        )
        assert {res["url"].removeprefix(site.url) for res in r.json()["results"]} == set(EDITED)
        print(
            f"python docs: first crawl {first_seconds:.0f} s ({counts['chunks_created']} chunks); "
            f"unchanged refresh {refresh_seconds:.1f} s ({refresh_seconds / first_seconds:.1%})"
        )
