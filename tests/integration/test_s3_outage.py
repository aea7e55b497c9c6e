"""S3 going away in the middle of an ingestion: the documents' jobs fail transiently and are
retried with backoff (never a permanently failed document), and once S3 is back every document
ends ``indexed`` and is found by search.

The outage is real: the app's S3 endpoint is a TCP gate in front of moto_server
(``support.moto_s3.TcpGate``), cut after the files were stored and before the workers read them
(moto keeps its data in memory, so the server itself stays up, as a bucket does in an outage of
the network to it).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import key_headers, make_settings, running_app, wait_pipeline
from lorebase.db.models import Document, Job
from lorebase.settings import S3Settings
from support.moto_s3 import TcpGate, s3_settings, shared_server

TOPICS = ["zymurgy fermentation", "vulcanology basalt", "glaciology moraines", "ornithology warblers"]


@pytest.mark.embedded_only("the gate's address is given to the app's own worker threads")
def test_an_s3_outage_during_ingestion_is_retried_until_every_document_is_indexed(tmp_path: Path) -> None:
    url, bucket = shared_server()
    gate = TcpGate(int(url.rsplit(":", 1)[1]))
    s3 = S3Settings(
        **s3_settings(gate.url, bucket, f"outage-{uuid.uuid4().hex[:8]}/"),
        connect_timeout_seconds=1,
        read_timeout_seconds=2,
        max_attempts=1,
    )
    settings = make_settings(
        tmp_path / "data",
        blob_store="s3",
        s3=s3,
        jobs={"max_attempts": 50, "backoff_base_seconds": 0.2, "backoff_max_seconds": 0.5},
    )
    try:
        with running_app(settings, workers=2) as client:
            headers = key_headers(client)
            r = client.post("/api/v1/kb-drafts", json={"name": "outage"}, headers=headers)
            draft_id = r.json()["id"]
            files = [
                (
                    "files",
                    (f"{topic.split()[0]}.md", f"# {topic}\n\nNotes on {topic}.\n".encode(), "text/markdown"),
                )
                for topic in TOPICS
            ]
            r = client.post(f"/api/v1/kb-drafts/{draft_id}/sources", files=files, headers=headers)
            assert r.status_code == 201, r.text  # the files are in the bucket
            gate.cut()  # before any worker read them
            other = client.post("/api/v1/kb-drafts", json={"name": "later"}, headers=headers).json()["id"]
            r = client.post(f"/api/v1/kb-drafts/{other}/sources", files=files[:1], headers=headers)
            assert r.status_code == 503 and "S3" in r.json()["error"]["message"], r.text  # try later
            r = client.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=headers)
            assert r.status_code == 202, r.text
            kb_id, pipeline_id = r.json()["kb_id"], r.json()["pipeline_id"]

            runtime = client.app.state.runtime  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while True:  # the workers try, fail transiently, and are told to come back later
                with runtime.db.read_session() as s:
                    retried = s.execute(
                        select(Job.attempts, Job.last_error).where(
                            Job.pipeline_id == pipeline_id, Job.error_kind == "transient", Job.attempts >= 2
                        )
                    ).all()
                    failed = s.scalars(
                        select(Document.id).where(Document.kb_id == kb_id, Document.status == "failed")
                    ).all()
                assert failed == []
                if retried:
                    break
                assert time.monotonic() < deadline, "no job was retried during the outage"
                time.sleep(0.1)
            assert any("S3" in (error or "") for _, error in retried), retried

            gate.restore()
            state = wait_pipeline(client, headers, pipeline_id, timeout=60)
            assert state["status"] == "completed", state
            r = client.get(f"/api/v1/kbs/{kb_id}/documents", headers=headers)
            assert {d["status"] for d in r.json()["items"]} == {"indexed"}
            assert r.json()["total"] == len(TOPICS)
            for topic in TOPICS:
                body = {"query": topic, "top_k": 1, "mode": "keyword"}
                r = client.post(f"/api/v1/kbs/{kb_id}/search", json=body, headers=headers)
                assert r.status_code == 200, r.text
                assert topic.split()[1] in r.json()["results"][0]["text"]
    finally:
        gate.close()
