"""Pipeline control through the HTTP API: cancel and pause/resume mid-run, retry of failed
documents, job and queue listings, and KB deletion down to the vector and keyword indexes.

Cancel and pause need a pipeline that is still embedding when the request lands: the app here
embeds in batches of 8 (so control is checked often) over records of ~90 words (one chunk each).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from conftest import FINAL, finalize_draft, make_settings, running_app, wait_pipeline
from factories import pdf_bytes
from lorebase.assembly import build_executor
from lorebase.db.models import Chunk, Document, Job, Pipeline, QueryLog
from lorebase.runtime import Runtime
from lorebase.services import drafts, pipelines
from lorebase.services.auth import create_key

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "scifact" / "corpus.jsonl"
MARKDOWN = b"# Tides\n\nThe Moon's gravity raises two bulges in the oceans, so most coasts see two high tides a day.\n"


def _records(n: int) -> list[dict[str, str]]:
    out = []
    with CORPUS.open() as f:
        for line in f:
            d = json.loads(line)
            words = d["text"].split()
            if len(words) < 90:
                continue
            out.append({"external_id": d["_id"], "title": d["title"], "text": " ".join(words[:90])})
            if len(out) == n:
                return out
    raise AssertionError("corpus too small")


@pytest.fixture
def batched_api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The app with 2 embedded workers embedding 8 chunks per batch, and a key for it."""
    settings = make_settings(tmp_path / "batched", embed_batch_size=8)
    with running_app(settings, workers=2) as client:
        key, _ = create_key(client.app.state.runtime.db, workspace="default")  # type: ignore[attr-defined]
        yield client, {"Authorization": f"Bearer {key}"}


def _db(api: TestClient) -> Any:
    return api.app.state.runtime.db  # type: ignore[attr-defined]


def _wait_indexed(
    api: TestClient, auth: dict[str, str], pipeline_id: str, at_least: int, created: int
) -> dict[str, Any]:
    """Poll until every document is chunked and some chunks are indexed; fail if the pipeline ends
    first (it is meant to be mid-embedding, with no document mid-parse when control requests land)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = api.get(f"/api/v1/pipelines/{pipeline_id}", headers=auth).json()
        assert state["status"] in ("queued", "running"), state
        counts = state["counts"]
        if counts["chunks_indexed"] >= at_least and counts["chunks_created"] >= created:
            return state
        time.sleep(0.05)
    raise AssertionError("no chunk was indexed in time")


def _running_jobs(api: TestClient, pipeline_id: str) -> int:
    with _db(api).read_session() as s:
        return s.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.pipeline_id == pipeline_id, Job.status == "running")
        ).scalar_one()


def _indexed_chunks(api: TestClient, kb_id: str) -> tuple[int, int, int]:
    """(chunks marked embedded, vectors, keyword rows) of one KB."""
    with _db(api).read_session() as s:
        embedded = s.execute(
            select(func.count()).select_from(Chunk).where(Chunk.kb_id == kb_id, Chunk.embedded.is_(True))
        ).scalar_one()
        if s.get_bind().dialect.name == "postgresql":  # pgvector: a chunk's vector and keywords share a row
            vectors_sql = "SELECT count(*) FROM pgvector_chunks_384 WHERE kb_id = :kb"
            keywords_sql = "SELECT count(*) FROM pgvector_chunks_384 WHERE kb_id = :kb AND tsv IS NOT NULL"
        else:
            vectors_sql = "SELECT count(*) FROM vec_chunks_384 WHERE kb_id = :kb"
            keywords_sql = "SELECT count(*) FROM chunks_fts WHERE kb_id = :kb"
        vectors = s.execute(text(vectors_sql), {"kb": kb_id}).scalar()
        keywords = s.execute(text(keywords_sql), {"kb": kb_id}).scalar()
    return embedded, vectors, keywords


def _doc_statuses(api: TestClient, auth: dict[str, str], kb_id: str) -> dict[str, list[dict[str, Any]]]:
    docs = api.get(f"/api/v1/kbs/{kb_id}/documents?limit=1000", headers=auth).json()["items"]
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["status"], []).append(d)
    return out


def test_cancel_mid_embedding_keeps_what_was_indexed_searchable_and_cancels_the_rest(
    batched_api: tuple[TestClient, dict[str, str]],
) -> None:
    api, auth = batched_api
    records = _records(120)
    body = finalize_draft(api, auth, records=records)
    kb_id, pipeline_id = body["kb_id"], body["pipeline_id"]
    _wait_indexed(api, auth, pipeline_id, 8, created=120)

    r = api.post(f"/api/v1/pipelines/{pipeline_id}/cancel", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("cancelling", "cancelled")
    state = wait_pipeline(api, auth, pipeline_id, timeout=60)
    assert state["status"] == "cancelled" and state["progress"] == 100

    by_status = _doc_statuses(api, auth, kb_id)
    assert set(by_status) == {"indexed", "cancelled"}, {k: len(v) for k, v in by_status.items()}
    indexed, cancelled = by_status["indexed"], by_status["cancelled"]
    assert len(indexed) >= 8 and len(cancelled) > 0 and len(indexed) + len(cancelled) == 120
    embedded, vectors, keywords = _indexed_chunks(api, kb_id)
    assert embedded == vectors == keywords == len(indexed) == state["counts"]["chunks_indexed"]

    kb = api.get(f"/api/v1/kbs/{kb_id}", headers=auth).json()
    assert kb["status"] == "ready"
    assert kb["counts"]["indexed"] == len(indexed) and kb["counts"]["chunks"] == len(indexed)
    texts = {r["external_id"]: r["text"] for r in records}
    for doc in (indexed[0], indexed[-1]):
        for mode in ("keyword", "vector", "hybrid"):
            r = api.post(
                f"/api/v1/kbs/{kb_id}/search",
                json={"query": texts[doc["external_id"]], "mode": mode, "top_k": 3},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["document_id"] == doc["id"], mode
    r = api.post(
        f"/api/v1/kbs/{kb_id}/search",
        json={"query": texts[cancelled[0]["external_id"]], "mode": "keyword", "top_k": 100},
        headers=auth,
    )
    assert cancelled[0]["id"] not in {x["document_id"] for x in r.json()["results"]}
    with _db(api).read_session() as s:
        active = s.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.kb_id == kb_id, Job.status.in_(("pending", "running")))
        ).scalar_one()
    assert active == 0
    _error_409 = api.post(f"/api/v1/pipelines/{pipeline_id}/cancel", headers=auth)
    assert _error_409.status_code == 409 and _error_409.json()["error"]["code"] == "conflict"

    # usable: more documents can be added to the cancelled KB and end up searchable
    more = api.post(
        f"/api/v1/kbs/{kb_id}/documents",
        json={"documents": [{"external_id": "tides", "text": MARKDOWN.decode()}]},
        headers=auth,
    )
    assert more.status_code == 202, more.text
    assert wait_pipeline(api, auth, more.json()["pipeline_id"], timeout=60)["status"] == "completed"
    r = api.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "high tides moon"}, headers=auth)
    assert r.json()["results"][0]["external_id"] == "tides"


def test_pause_stops_indexing_and_resume_completes_like_a_clean_run(
    batched_api: tuple[TestClient, dict[str, str]],
) -> None:
    api, auth = batched_api
    records = _records(60)
    body = finalize_draft(api, auth, records=records, name="paused")
    kb_id, pipeline_id = body["kb_id"], body["pipeline_id"]
    _wait_indexed(api, auth, pipeline_id, 8, created=60)

    r = api.post(f"/api/v1/pipelines/{pipeline_id}/pause", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "paused", r.text
    deadline = time.monotonic() + 60
    while _running_jobs(api, pipeline_id) and time.monotonic() < deadline:
        time.sleep(0.1)  # the batch in flight finishes, then its job gives the lease back
    assert _running_jobs(api, pipeline_id) == 0
    first = _indexed_chunks(api, kb_id)
    time.sleep(2.0)
    second = _indexed_chunks(api, kb_id)
    assert first == second and 8 <= first[0] < 60, (first, second)
    state = api.get(f"/api/v1/pipelines/{pipeline_id}", headers=auth).json()
    assert state["status"] == "paused" and state["progress"] < 100
    assert api.post(f"/api/v1/pipelines/{pipeline_id}/pause", headers=auth).status_code == 409

    r = api.post(f"/api/v1/pipelines/{pipeline_id}/resume", headers=auth)
    assert r.status_code == 200, r.text
    state = wait_pipeline(api, auth, pipeline_id, timeout=180)
    assert state["status"] == "completed" and state["counts"]["documents_done"] == 60
    assert set(_doc_statuses(api, auth, kb_id)) == {"indexed"}
    assert api.post(f"/api/v1/pipelines/{pipeline_id}/resume", headers=auth).status_code == 409

    clean = finalize_draft(api, auth, records=records, name="clean")  # embeddings come from the cache
    clean_state = wait_pipeline(api, auth, clean["pipeline_id"], timeout=180)
    assert clean_state["status"] == "completed"
    assert state["counts"]["chunks_indexed"] == clean_state["counts"]["chunks_indexed"]
    assert _indexed_chunks(api, kb_id) == _indexed_chunks(api, clean["kb_id"])

    def contents(kb: str) -> list[tuple[Any, ...]]:
        with _db(api).read_session() as s:
            return [
                tuple(row)
                for row in s.execute(
                    select(Document.external_id, Chunk.chunk_index, Chunk.content_hash, Chunk.embedded)
                    .join(Document, Document.id == Chunk.document_id)
                    .where(Chunk.kb_id == kb)
                    .order_by(Document.external_id, Chunk.chunk_index)
                ).all()
            ]

    assert contents(kb_id) == contents(clean["kb_id"])


CORRUPT_PDF = pdf_bytes(["A page of text that will never be read."])[:300]


def test_retry_is_409_while_running_and_afterwards_requeues_the_failed_document(
    api: TestClient, auth: dict[str, str]
) -> None:
    files = [
        ("files", ("broken.pdf", CORRUPT_PDF, "application/pdf")),
        ("files", ("tides.md", MARKDOWN, "text/markdown")),
    ]
    body = finalize_draft(api, auth, files=files)
    kb_id, pipeline_id = body["kb_id"], body["pipeline_id"]
    r = api.post(f"/api/v1/pipelines/{pipeline_id}/retry", headers=auth)  # queued or running
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text

    state = wait_pipeline(api, auth, pipeline_id)
    assert state["status"] == "completed_with_errors" and state["counts"]["documents_failed"] == 1
    (failed,) = _doc_statuses(api, auth, kb_id)["failed"]
    first_error = failed["error"]
    assert failed["filename"] == "broken.pdf" and failed["error_kind"] == "permanent" and "PDF" in first_error

    # small files are parsed in one group job: the document failed, the group job did not
    jobs = api.get(f"/api/v1/jobs?kb_id={kb_id}", headers=auth).json()["items"]
    assert [j["status"] for j in jobs if j["type"] == "process_document"] == ["succeeded"]

    r = api.post(f"/api/v1/pipelines/{pipeline_id}/retry", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("running", "completed_with_errors")
    state = wait_pipeline(api, auth, pipeline_id)
    assert state["status"] == "completed_with_errors" and state["counts"]["documents_failed"] == 1
    statuses = _doc_statuses(api, auth, kb_id)
    assert [d["filename"] for d in statuses["indexed"]] == ["tides.md"]
    assert [(d["id"], d["error"]) for d in statuses["failed"]] == [(failed["id"], first_error)]
    jobs = api.get(f"/api/v1/jobs?status=failed&kb_id={kb_id}", headers=auth).json()
    assert jobs["total"] == 1 and jobs["items"][0]["document_id"] == failed["id"]
    assert jobs["items"][0]["last_error"] == first_error and jobs["items"][0]["attempts"] == 1
    all_failed = api.get("/api/v1/jobs?status=failed", headers=auth).json()
    assert [j["id"] for j in all_failed["items"]] == [jobs["items"][0]["id"]]
    kb = api.get(f"/api/v1/kbs/{kb_id}", headers=auth).json()
    assert kb["status"] == "ready" and kb["counts"]["indexed"] == 1 and kb["counts"]["failed"] == 1

    r = api.get("/api/v1/jobs?status=exploded", headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"


def test_retry_of_a_pipeline_without_failures_is_409(api: TestClient, auth: dict[str, str]) -> None:
    body = finalize_draft(api, auth, files=[("files", ("tides.md", MARKDOWN, "text/markdown"))])
    assert wait_pipeline(api, auth, body["pipeline_id"])["status"] == "completed"
    r = api.post(f"/api/v1/pipelines/{body['pipeline_id']}/retry", headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


def test_queue_reports_the_documented_keys(api: TestClient, auth: dict[str, str]) -> None:
    body = finalize_draft(api, auth, files=[("files", ("broken.pdf", CORRUPT_PDF, "application/pdf"))])
    assert wait_pipeline(api, auth, body["pipeline_id"])["status"] == "failed"
    r = api.get("/api/v1/queue", headers=auth)
    assert r.status_code == 200, r.text
    q = r.json()
    documented = {
        "pending",
        "running",
        "failed",
        "dead",
        "active_workers",
        "avg_processing_seconds",
        "error_rate",
        "throughput_per_hour",
    }
    assert documented <= set(q)
    assert q["pending"] == 0 and q["running"] == 0 and q["failed"] == 1 and q["dead"] == 0
    assert q["error_rate"] == 1.0 and q["throughput_per_hour"] == 0
    assert isinstance(q["active_workers"], int)


def test_deleting_a_kb_removes_its_documents_chunks_vectors_and_keywords_only(
    api: TestClient, auth: dict[str, str]
) -> None:
    doomed = finalize_draft(api, auth, records=_records(3), name="doomed")
    kept = finalize_draft(api, auth, files=[("files", ("tides.md", MARKDOWN, "text/markdown"))], name="kept")
    for body in (doomed, kept):
        assert wait_pipeline(api, auth, body["pipeline_id"])["status"] == "completed"
    kb_id = doomed["kb_id"]
    api.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "cells"}, headers=auth)
    assert _indexed_chunks(api, kb_id) == (3, 3, 3)
    before_kept = _indexed_chunks(api, kept["kb_id"])

    r = api.delete(f"/api/v1/kbs/{kb_id}", headers=auth)
    assert r.status_code == 204 and r.content == b""

    assert api.get(f"/api/v1/kbs/{kb_id}", headers=auth).status_code == 404
    assert api.get(f"/api/v1/pipelines/{doomed['pipeline_id']}", headers=auth).status_code == 404
    assert api.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "cells"}, headers=auth).status_code == 404
    assert api.delete(f"/api/v1/kbs/{kb_id}", headers=auth).status_code == 404
    assert _indexed_chunks(api, kb_id) == (0, 0, 0)
    with _db(api).read_session() as s:
        for model in (Document, Chunk, Job, Pipeline, QueryLog):
            n = s.execute(select(func.count()).select_from(model).where(model.kb_id == kb_id)).scalar_one()
            assert n == 0, model.__tablename__
    assert _indexed_chunks(api, kept["kb_id"]) == before_kept == (1, 1, 1)
    r = api.post(f"/api/v1/kbs/{kept['kb_id']}/search", json={"query": "high tides"}, headers=auth)
    assert r.json()["results"][0]["filename"] == "tides.md"
    assert [kb["id"] for kb in api.get("/api/v1/kbs", headers=auth).json()["items"]] == [kept["kb_id"]]


def test_cancel_ends_even_when_a_worker_dies_during_the_cancellation(
    runtime: Runtime, principal: Any
) -> None:
    draft = drafts.create(runtime, principal, name="crashy", description=None, config=None)
    drafts.add_text(runtime, principal, draft["id"], [{"text": "alpha beta"}, {"text": "gamma delta"}])
    pipeline_id = drafts.finalize(runtime, principal, draft["id"])["pipeline_id"]
    claimed = runtime.queue.claim("a-worker-that-will-die")  # takes a lease, then never heartbeats
    assert claimed is not None and claimed.pipeline_id == pipeline_id
    assert pipelines.cancel(runtime, principal, pipeline_id)["status"] == "cancelling"

    executor = build_executor(runtime, concurrency=1, name="survivor")  # its reaper takes the lease back
    executor.start()
    try:
        deadline = time.monotonic() + runtime.settings.jobs.lease_seconds + 6
        state = pipelines.get(runtime, principal, pipeline_id)
        while state["status"] not in FINAL and time.monotonic() < deadline:
            time.sleep(0.2)
            state = pipelines.get(runtime, principal, pipeline_id)
    finally:
        executor.stop(drain=True, timeout=10)
    assert state["status"] == "cancelled", state
    with runtime.db.read_session() as s:
        left = s.execute(select(Job.status).where(Job.pipeline_id == pipeline_id)).scalars().all()
    assert set(left) == {"cancelled"}
