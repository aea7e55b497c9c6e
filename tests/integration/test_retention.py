"""Retention (``services/lifecycle.py``): what is past its time is deleted, in batches, and nothing
else; a workspace's own retention overrides the settings; original-file retention drops a
document's original but keeps it searchable, and a re-index then says plainly why it cannot.

Old rows are written with old timestamps (data, not a faked clock); the engine runs on real time.
Runs on SQLite and, in ``make test-postgres``, on PostgreSQL.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from lorebase.db.models import (
    Document,
    IdempotencyKey,
    Job,
    KnowledgeBase,
    Pipeline,
    PipelineEvent,
    QueryLog,
    Workspace,
    new_id,
    utcnow,
)
from lorebase.pipeline.process import original_removed
from lorebase.runtime import Runtime
from lorebase.services.auth import local_principal
from lorebase.services.lifecycle import BATCH, apply_retention, collect_garbage
from support.testdb import ON_POSTGRES

DAY = timedelta(days=1)


def _count(runtime: Runtime, model: Any, *where: Any) -> int:
    with runtime.db.read_session() as s:
        return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def _job(ws: str, status: str, finished_days_ago: float | None, **extra: Any) -> dict[str, Any]:
    now = utcnow()
    finished = None if finished_days_ago is None else now - finished_days_ago * DAY
    return {
        "id": new_id(),
        "workspace_id": ws,
        "type": "process_document",
        "payload": {},
        "status": status,
        "priority": 0,
        "attempts": 0,
        "claims": 0,
        "progressed": False,
        "max_attempts": 3,
        "run_at": now - 60 * DAY,
        "checkpoint": {},
        "created_at": now - 60 * DAY,
        "updated_at": now,
        "finished_at": finished,
        **extra,
    }


def test_retention_deletes_what_is_past_its_time_in_batches_and_keeps_the_rest(runtime: Runtime) -> None:
    """Defaults: jobs and events 30 days, query logs 365 (one workspace says 7), idempotency
    keys 1 day or their expiry."""
    mine = local_principal(runtime.db, "mine").workspace_id
    short = local_principal(runtime.db, "short-logs").workspace_id
    now = utcnow()
    with runtime.db.session() as s:
        s.execute(update(Workspace).where(Workspace.id == short).values(retention={"query_logs_days": 7}))
        kbs = {ws: new_id() for ws in (mine, short)}
        for ws, kb in kbs.items():
            s.add(KnowledgeBase(id=kb, workspace_id=ws, name="kb", config={}))
        s.flush()
        pipeline = Pipeline(id=new_id(), kb_id=kbs[mine], workspace_id=mine)
        s.add(pipeline)
        s.flush()
        old_jobs = [_job(mine, status, 31) for status in ("succeeded", "failed", "cancelled", "dead")]
        old_jobs += [_job(mine, "succeeded", 40) for _ in range(BATCH)]  # more than one batch
        kept_jobs = [
            _job(mine, "succeeded", 29),
            _job(mine, "pending", None),
            _job(mine, "running", 31),  # a running job is never deleted, whatever its timestamps
        ]
        s.execute(insert(Job), old_jobs + kept_jobs)
        s.execute(
            insert(PipelineEvent),
            [
                {
                    "pipeline_id": pipeline.id,
                    "seq": n,
                    "kind": "pipeline",
                    "data": {},
                    "created_at": now - days * DAY,
                }
                for n, days in enumerate([45, 31, 29, 0])
            ],
        )
        logs = []
        for ws in (mine, short):
            for days in (400, 30, 1):
                logs.append(
                    {
                        "id": new_id(),
                        "kb_id": kbs[ws],
                        "workspace_id": ws,
                        "query": f"{days} days ago",
                        "mode": "hybrid",
                        "top_k": 10,
                        "filters": {},
                        "result_chunk_ids": [],
                        "latency_ms": 1.0,
                        "created_at": now - days * DAY,
                    }
                )
        s.execute(insert(QueryLog), logs)
        keys = [("old", 2 * DAY, now + DAY), ("expired", timedelta(hours=1), now - timedelta(minutes=1))]
        keys += [("fresh", timedelta(hours=1), now + DAY)]
        s.execute(
            insert(IdempotencyKey),
            [
                {
                    "id": new_id(),
                    "workspace_id": mine,
                    "key": name,
                    "method": "POST",
                    "path": "/api/v1/kbs",
                    "fingerprint": "f",
                    "status": "done",
                    "created_at": now - age,
                    "expires_at": expires,
                }
                for name, age, expires in keys
            ],
        )

    report = apply_retention(runtime)

    assert (report.jobs, report.events, report.query_logs, report.idempotency_keys) == (BATCH + 4, 2, 3, 2)
    with runtime.db.read_session() as s:
        assert sorted(s.execute(select(Job.status)).scalars()) == ["pending", "running", "succeeded"]
        assert sorted(s.execute(select(PipelineEvent.seq)).scalars()) == [2, 3]
        left = s.execute(select(QueryLog.workspace_id, QueryLog.query)).all()
        assert sorted(q for ws, q in left if ws == mine) == ["1 days ago", "30 days ago"]
        assert sorted(q for ws, q in left if ws == short) == ["1 days ago"]
        assert list(s.execute(select(IdempotencyKey.key)).scalars()) == ["fresh"]
    assert apply_retention(runtime).jobs == 0  # idempotent: a second pass finds nothing


def test_zero_days_keeps_everything(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        retention={"jobs_days": 0, "events_days": 0, "query_logs_days": 0, "idempotency_days": 0},
    )
    runtime = Runtime(settings)
    try:
        ws = local_principal(runtime.db, "default").workspace_id
        with runtime.db.session() as s:
            s.execute(insert(Job), [_job(ws, "succeeded", 10_000)])
        report = apply_retention(runtime)
        assert (report.jobs, report.query_logs, report.idempotency_keys) == (0, 0, 0)
        assert _count(runtime, Job) == 1
    finally:
        runtime.close()


def test_original_retention_keeps_search_and_a_reindex_says_why_it_cannot(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", scheduler={"enabled": False})
    with running_app(settings) as client:
        h = key_headers(client)
        runtime: Runtime = client.app.state.runtime
        text = "Basalt columns form when thick lava flows cool and contract into hexagonal prisms. " * 20
        data = f"# Basalt\n\n{text}\n".encode()
        fin = finalize_draft(client, h, files=[("files", ("basalt.md", data, "text/markdown"))])
        assert wait_pipeline(client, h, fin["pipeline_id"])["status"] == "completed"
        kb_id = fin["kb_id"]
        with runtime.db.session() as s:  # the tenant's own policy, as PATCH /workspace would set it
            s.execute(update(Workspace).values(retention={"originals_days": 1e-5}))  # ~0.9 s
        time.sleep(1.0)

        assert apply_retention(runtime).originals == 1
        with runtime.db.read_session() as s:
            doc = s.execute(select(Document).where(Document.kb_id == kb_id)).scalar_one()
        assert doc.blob_key is None and doc.original_removed_at is not None
        assert collect_garbage(runtime, grace_seconds=0).bytes_freed == len(data)
        hits = client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "hexagonal basalt"}, headers=h)
        assert hits.status_code == 200 and hits.json()["results"][0]["document_id"] == doc.id

        # a re-parse that still meets it (retention ran after the job read the document) fails it
        # permanently with the reason, not "missing from storage"
        err = original_removed(runtime, doc.id)
        assert err is not None and err.message.startswith(
            f"the original of 'basalt.md' was deleted on {doc.original_removed_at:%Y-%m-%d}"
        )
        assert "by the workspace's retention policy (originals_days=1e-05)" in err.message
        assert err.message.endswith("upload it again to re-index it")

        # a re-index would rebuild the KB without it: refused up front, saying why and what to do
        store = {"type": "pgvector" if ON_POSTGRES else "sqlite"}
        config = {"chunking": {"chunk_size": 64, "chunk_overlap": 8}, "store": store}
        r = client.patch(f"/api/v1/kbs/{kb_id}", json={"config": config}, headers=h)
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert "no longer have their original" in error["message"] and "'basalt.md'" in error["message"]
        assert "Upload them again" in error["message"]
        assert error["details"]["documents"] == [doc.id]
        assert [
            v["version"] for v in client.get(f"/api/v1/kbs/{kb_id}/versions", headers=h).json()["items"]
        ] == [1]

        # uploading the same file again brings the original back (nothing to re-process)
        r = client.post(
            f"/api/v1/kbs/{kb_id}/documents",
            files=[("files", ("basalt.md", data, "text/markdown"))],
            headers=h,
        )
        assert r.status_code == 202, r.text
        assert [d["status"] for d in r.json()["documents"]] == ["skipped"]
        with runtime.db.read_session() as s:
            back = s.execute(select(Document).where(Document.id == doc.id)).scalar_one()
        assert back.blob_key is not None and back.original_removed_at is None
        assert runtime.blobs.get(back.blob_key) == data

        # and the re-index goes through, the document rebuilt from it
        r = client.patch(f"/api/v1/kbs/{kb_id}", json={"config": config}, headers=h)
        assert r.status_code == 202, r.text
        assert wait_pipeline(client, h, r.json()["pipeline_id"])["status"] == "completed"
        versions = {
            v["version"]: v for v in client.get(f"/api/v1/kbs/{kb_id}/versions", headers=h).json()["items"]
        }
        assert versions[2]["status"] == "live" and versions[2]["failed_documents"] == []
