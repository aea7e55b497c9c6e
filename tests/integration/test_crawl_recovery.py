"""SIGKILL a real worker process in the middle of a crawl, restart it, and compare the KB with an
uninterrupted crawl of the same site: same documents, same chunks, nothing twice, and the
finished pages are not fetched again.

The uninterrupted reference crawl stops before the embedder (an executor for the ``crawl`` and
``process`` queues only): what it must agree on is the documents and chunks the crawl made.
The interrupted crawl goes to the end: every document indexed, one vector and one keyword
entry per chunk."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from conftest import make_settings
from lorebase.assembly import build_executor
from lorebase.db.models import Chunk, CrawlPage, Document, Job, Pipeline
from lorebase.runtime import Runtime
from lorebase.services import drafts
from lorebase.services.auth import local_principal
from support.site import serve
from support.worker import start_worker

DOCS = Path("/usr/share/doc/python3.11/html")
CONCURRENCY = 2
#: the tutorial's index and its ten shortest chapters (~140 chunks; the six long chapters would
#: add ~290 chunks of embedding and nothing to the crawl being interrupted)
PAGES = [
    "index", "appendix", "appetite", "floatingpoint", "interactive", "interpreter",
    "introduction", "stdlib", "stdlib2", "venv", "whatnow",
]  # fmt: skip


@pytest.fixture
def site_root(tmp_path: Path) -> Path:
    if not DOCS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("python3.11-doc is not installed; .ci/run installs it")
        pytest.skip("python3.11-doc is not installed (apt-get install python3.11-doc)")
    root = tmp_path / "site"
    shutil.copytree(DOCS / "tutorial", root / "tutorial")
    return root


def _start(rt: Runtime, url: str) -> str:
    p = local_principal(rt.db)
    draft = drafts.create(rt, p, name="crawl-crash", description=None, config=None)
    crawl = {
        "max_depth": 3,
        "concurrency": CONCURRENCY,
        "include": [f"/tutorial/{page}.html" for page in PAGES],
    }
    drafts.add_web(rt, p, draft["id"], url, crawl)
    return str(drafts.finalize(rt, p, draft["id"])["pipeline_id"])


def _snapshot(rt: Runtime, base: str) -> dict[str, Any]:
    with rt.db.read_session() as s:
        docs = s.execute(
            select(Document.external_id, Document.content_hash, Document.chunk_count).order_by(
                Document.external_id
            )
        ).all()
        statuses = s.execute(select(Document.status)).scalars().all()
        chunks = s.execute(
            select(Document.external_id, Chunk.chunk_index, Chunk.content_hash, Chunk.embedded)
            .join(Document, Document.id == Chunk.document_id)
            .order_by(Document.external_id, Chunk.chunk_index)
        ).all()
        vec = s.execute(text("SELECT count(*), count(DISTINCT rowid) FROM vec_chunks_384")).one()
        fts = s.execute(text("SELECT count(*), count(DISTINCT rowid) FROM chunks_fts")).one()
        dup_ids = s.execute(select(Chunk.id).group_by(Chunk.id).having(func.count() > 1)).all()
    return {
        "documents": [(str(u).removeprefix(base), h, n) for u, h, n in docs],
        "statuses": sorted(statuses),
        "chunks": [(str(u).removeprefix(base), i, h) for u, i, h, _ in chunks],
        "all_embedded": all(r[3] for r in chunks),
        "vectors": tuple(vec),
        "fts": tuple(fts),
        "duplicate_ids": len(dup_ids),
    }


def _wait_final(rt: Runtime, pid: str, worker: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        with rt.db.read_session() as s:
            state = s.execute(select(Pipeline.status).where(Pipeline.id == pid)).scalar_one()
        if state not in ("queued", "running"):
            return state
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
        time.sleep(0.2)
    raise AssertionError(f"pipeline still {state} after {timeout} s")


def test_sigkill_mid_crawl_then_restart_matches_an_uninterrupted_crawl(
    tmp_path: Path, site_root: Path
) -> None:
    with serve(site_root, latency=0.25) as site:
        start = f"{site.url}/tutorial/index.html"
        clean = Runtime(make_settings(tmp_path / "clean", crawl={"allow_private_networks": True}))
        _start(clean, start)
        build_executor(clean, concurrency=2, kinds=("crawl", "process")).run_until_idle()
        expected = _snapshot(clean, site.url)
        clean.close()
        assert expected["statuses"] == ["embedding"] * len(PAGES)  # fetched, parsed and chunked
        n_chunks = len(expected["chunks"])
        assert n_chunks > len(PAGES)
        site.requests.clear()

        data_dir = tmp_path / "crash"
        rt = Runtime(make_settings(data_dir, crawl={"allow_private_networks": True}))
        pid = _start(rt, start)
        worker = start_worker(data_dir, LOREBASE_CRAWL__ALLOW_PRIVATE_NETWORKS="true")
        try:
            deadline = time.monotonic() + 120
            done = 0
            while time.monotonic() < deadline:
                with rt.db.read_session() as s:
                    done = s.execute(
                        select(func.count()).select_from(CrawlPage).where(CrawlPage.status != "queued")
                    ).scalar_one()
                if done >= 6:
                    break
                assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
                time.sleep(0.02)
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            with rt.db.read_session() as s:
                queued = s.execute(
                    select(func.count()).select_from(CrawlPage).where(CrawlPage.status == "queued")
                ).scalar_one()
                finished = {
                    url.removeprefix(site.url)
                    for url in s.execute(select(CrawlPage.url).where(CrawlPage.status != "queued")).scalars()
                }
                crawl_running = s.execute(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.type == "crawl_source", Job.status == "running")
                ).scalar_one()
            assert done >= 6 and queued > 0, "the kill must land in the middle of the crawl"
            assert crawl_running == 1  # a lease held by a dead process
            fetched_before = {p for p in site.requests if p.endswith(".html")}

            worker = start_worker(data_dir, LOREBASE_CRAWL__ALLOW_PRIVATE_NETWORKS="true")
            state = _wait_final(rt, pid, worker, timeout=300)
            assert state == "completed"
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        got = _snapshot(rt, site.url)
        hits = site.hits()
        rt.close()

    assert (got["documents"], got["chunks"]) == (expected["documents"], expected["chunks"])
    assert got["statuses"] == ["indexed"] * len(PAGES)
    assert got["all_embedded"] and got["duplicate_ids"] == 0
    assert got["vectors"] == got["fts"] == (n_chunks, n_chunks)  # one of each per chunk, none twice
    # pages saved before the kill are not fetched again; only those fetched but not yet saved
    # (in flight, or waiting for the next commit) are
    refetched = {p for p, n in hits.items() if n > 1 and p.endswith(".html")}
    assert len(finished) >= 6 and not refetched & finished, (refetched, finished)
    assert refetched <= fetched_before - finished
