"""SIGKILL a real worker process mid-batch, restart it, and compare with a clean run."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from sqlalchemy import func, select, text

from conftest import make_settings
from lorebase.assembly import build_executor
from lorebase.db.models import Chunk, Document, Job, Pipeline
from lorebase.runtime import Runtime
from lorebase.services.settle import settle
from support.faults import records, start_pipeline
from support.worker import start_worker


def _snapshot(rt: Runtime) -> dict[str, object]:
    with rt.db.read_session() as s:
        rows = s.execute(
            select(Document.external_id, Chunk.chunk_index, Chunk.content_hash, Chunk.embedded)
            .join(Document, Document.id == Chunk.document_id)
            .order_by(Document.external_id, Chunk.chunk_index)
        ).all()
        vec = s.execute(text("SELECT count(*), count(DISTINCT rowid) FROM vec_chunks_384")).one()
        fts = s.execute(text("SELECT count(*), count(DISTINCT rowid) FROM chunks_fts")).one()
        statuses = dict(s.execute(select(Document.status, func.count()).group_by(Document.status)).all())
        dup_ids = s.execute(select(Chunk.id).group_by(Chunk.id).having(func.count() > 1)).all()
    return {
        "chunks": [tuple(r[:3]) for r in rows],
        "all_embedded": all(r[3] for r in rows),
        "vectors": tuple(vec),
        "fts": tuple(fts),
        "statuses": statuses,
        "duplicate_ids": len(dup_ids),
    }


def test_sigkill_mid_batch_then_restart_matches_a_clean_run(tmp_path: Path) -> None:
    docs = records(160)

    clean = Runtime(make_settings(tmp_path / "clean", embed_batch_size=32))
    _, pid = start_pipeline(clean, docs, name="crash")
    build_executor(clean, concurrency=1).run_until_idle()
    settle(clean, pid)
    expected = _snapshot(clean)
    clean.close()
    assert expected["statuses"] == {"indexed": 160}

    data_dir = tmp_path / "crash"
    rt = Runtime(make_settings(data_dir, embed_batch_size=32))
    _, pid = start_pipeline(rt, docs, name="crash")
    worker = start_worker(data_dir, LOREBASE_EMBED_BATCH_SIZE="32")
    try:
        deadline = time.monotonic() + 180
        indexed = 0
        while time.monotonic() < deadline:
            with rt.db.read_session() as s:
                indexed = s.execute(select(Pipeline.chunks_indexed).where(Pipeline.id == pid)).scalar_one()
            if indexed >= 64:
                break
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert 0 < indexed < 160, "the kill must land in the middle of the run"
        with rt.db.read_session() as s:
            running = s.execute(
                select(func.count()).select_from(Job).where(Job.status == "running")
            ).scalar_one()
            state = s.execute(select(Pipeline.status).where(Pipeline.id == pid)).scalar_one()
        assert running >= 1 and state == "running"  # a lease held by a dead process

        worker = start_worker(data_dir, LOREBASE_EMBED_BATCH_SIZE="32")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with rt.db.read_session() as s:
                state = s.execute(select(Pipeline.status).where(Pipeline.id == pid)).scalar_one()
            if state not in ("queued", "running"):
                break
            time.sleep(0.2)
        assert state == "completed"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    got = _snapshot(rt)
    with rt.db.read_session() as s:
        reaped = s.execute(
            select(func.count()).select_from(Job).where(Job.last_error.like("worker lost (lease expired)%"))
        ).scalar_one()
    rt.close()
    assert reaped >= 1  # the killed job really was taken over
    assert got == expected
    assert got["vectors"] == (160, 160) and got["fts"] == (160, 160) and got["duplicate_ids"] == 0
