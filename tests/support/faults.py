"""The fault suite's harness: a small real corpus, pipelines started the way finalize starts
them, waits, and the audit every fault case ends with.

The audit checks the final database, not the path taken to it:

* no job is ``running`` (nothing holds a lease for a dead worker) and every document of the
  audited pipelines is in a final state (``indexed``, ``failed`` or ``cancelled``);
* no chunk id appears twice, and the chunks equal a clean run's (document, index, content hash);
* a document is ``indexed`` exactly when it has chunks and every one of them has its vector
  and its keyword entry; no vector or keyword entry belongs to a chunk that does not exist;
* the pipeline's counters agree with the rows (a retried batch is not counted twice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from lorebase.adapters.stores.pgvector import PgvectorStore
from lorebase.assembly import build_executor
from lorebase.db.models import Chunk, Document, Job, Pipeline
from lorebase.jobs.scheduler import SYSTEM_WORKSPACE
from lorebase.runtime import Runtime
from lorebase.services import drafts
from lorebase.services.auth import local_principal
from lorebase.services.settle import settle
from support.waiting import wait_for

__all__ = ["audit", "clean_run", "records", "start_pipeline", "wait_for"]

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "scifact" / "corpus.jsonl"
FINAL_DOCUMENT_STATES = ("indexed", "failed", "cancelled")


def records(n: int, *, words: int = 90, skip: int = 0) -> list[dict[str, str]]:
    """``n`` SciFact abstracts cut to ``words`` words (~120 tokens: one chunk each at 90)."""
    out: list[dict[str, str]] = []
    with CORPUS.open() as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            d = json.loads(line)
            out.append(
                {"external_id": d["_id"], "title": d["title"], "text": " ".join(d["text"].split()[:words])}
            )
            if len(out) == n:
                break
    return out


def start_pipeline(rt: Runtime, docs: list[dict[str, str]], name: str = "faults") -> tuple[str, str]:
    """Draft → text records → finalize, as the API does; returns (kb_id, pipeline_id)."""
    p = local_principal(rt.db)
    draft = drafts.create(rt, p, name=name, description=None, config=None)
    drafts.add_text(rt, p, draft["id"], docs)
    out = drafts.finalize(rt, p, draft["id"])
    return str(out["kb_id"]), str(out["pipeline_id"])


def clean_run(rt: Runtime, docs: list[dict[str, str]]) -> dict[str, Any]:
    """The reference: the same records ingested with nothing going wrong."""
    _, pid = start_pipeline(rt, docs, name="clean")
    build_executor(rt, concurrency=1).run_until_idle()
    settle(rt, pid)
    return audit(rt)


def pipeline_row(rt: Runtime, pipeline_id: str) -> Any:
    with rt.db.read_session() as s:
        return s.execute(select(Pipeline).where(Pipeline.id == pipeline_id)).scalar_one()


def pipeline_status(rt: Runtime, pipeline_id: str) -> str:
    return str(pipeline_row(rt, pipeline_id).status)


def ended(rt: Runtime, pipeline_id: str) -> bool:
    return pipeline_status(rt, pipeline_id) not in ("queued", "running", "paused", "cancelling")


def chunks_indexed(rt: Runtime, pipeline_id: str) -> int:
    return int(pipeline_row(rt, pipeline_id).chunks_indexed)


def running_jobs(rt: Runtime, job_type: str | None = None) -> int:
    with rt.db.read_session() as s:
        q = select(func.count()).select_from(Job).where(Job.status == "running")
        if job_type:
            q = q.where(Job.type == job_type)
        return int(s.execute(q).scalar_one())


def audit(rt: Runtime, *, counters: bool = True) -> dict[str, Any]:
    """Check the invariants of the module doc and return the comparable state.

    ``counters=False`` skips the per-pipeline counter check, for pipelines that re-ingest
    documents whose unchanged chunks were indexed by an earlier pipeline.
    """
    with rt.db.read_session() as s:
        # the workers' periodic housekeeping (jobs/scheduler.py) is no pipeline's: not audited here
        running = s.execute(
            select(Job.id, Job.type).where(Job.status == "running", Job.workspace_id != SYSTEM_WORKSPACE)
        ).all()
        assert not running, f"jobs still running (leases held for nobody): {running}"
        statuses = dict(s.execute(select(Document.status, func.count()).group_by(Document.status)).all())
        unfinished = {k: v for k, v in statuses.items() if k not in FINAL_DOCUMENT_STATES}
        assert not unfinished, f"documents not in a final state: {unfinished}"
        duplicates = s.execute(select(Chunk.id).group_by(Chunk.id).having(func.count() > 1)).scalars().all()
        assert not duplicates, f"duplicate chunk ids: {duplicates[:5]}"
        if s.get_bind().dialect.name == "postgresql":  # pgvector: vector and keywords are one row
            table = PgvectorStore(384).table_name
            vectors = keywords = set(s.execute(text(f"SELECT pk FROM {table}")).scalars())
        else:
            names = s.execute(text("SELECT name FROM sqlite_master WHERE name LIKE 'vec_chunks_%'")).scalars()
            vec_table = next(
                n for n in names if n.removeprefix("vec_chunks_").isdigit()
            )  # not its shadow tables
            vectors = set(s.execute(text(f"SELECT rowid FROM {vec_table}")).scalars())
            keywords = set(s.execute(text("SELECT rowid FROM chunks_fts")).scalars())
        chunk_rows = s.execute(select(Chunk.pk, Chunk.document_id, Chunk.embedded)).all()
        pks = {r.pk for r in chunk_rows}
        assert vectors <= pks, f"{len(vectors - pks)} vectors belong to no chunk"
        assert keywords <= pks, f"{len(keywords - pks)} keyword entries belong to no chunk"
        by_doc: dict[str, list[Any]] = {}
        for r in chunk_rows:
            by_doc.setdefault(r.document_id, []).append(r)
        for doc_id, status in s.execute(select(Document.id, Document.status)).all():
            rows = by_doc.get(doc_id, [])
            complete = bool(rows) and all(r.pk in vectors and r.pk in keywords and r.embedded for r in rows)
            assert (status == "indexed") == complete, (
                f"document {doc_id} is {status!r} but its vectors are {'all' if complete else 'not all'} present"
            )
        for p in s.execute(select(Pipeline)).scalars() if counters else []:
            embedded = s.execute(
                select(func.count())
                .select_from(Chunk)
                .join(Document, Document.id == Chunk.document_id)
                .where(Document.pipeline_id == p.id, Chunk.embedded.is_(True))
            ).scalar_one()
            assert p.chunks_indexed == embedded, (
                f"pipeline {p.id} counts {p.chunks_indexed} chunks indexed, the rows say {embedded}"
            )
        chunks = s.execute(
            select(Document.external_id, Chunk.chunk_index, Chunk.content_hash)
            .join(Document, Document.id == Chunk.document_id)
            .order_by(Document.external_id, Chunk.chunk_index)
        ).all()
    return {"chunks": [tuple(r) for r in chunks], "statuses": statuses, "vectors": len(vectors)}
