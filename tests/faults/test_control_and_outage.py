"""Pause, resume and cancel in the middle of embedding (case 12), and the database taken away
for 10 s in the middle of a run (case 7)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from lorebase.assembly import build_executor
from lorebase.db.models import Document
from lorebase.pipeline.embed import TEXTS_EMBEDDED
from lorebase.runtime import Runtime
from lorebase.services import pipelines, search
from lorebase.services.auth import local_principal
from support.faults import (
    audit,
    chunks_indexed,
    ended,
    pipeline_status,
    running_jobs,
    start_pipeline,
    wait_for,
)
from support.worker import start_worker

from .conftest import BATCH, N_RECORDS


@contextmanager
def embedding_under_way(rt: Runtime, corpus: list[dict[str, str]]) -> Iterator[tuple[str, str]]:
    """In-process workers on a new pipeline of ``corpus``, entered once two embed batches are in;
    yields (kb_id, pipeline_id) and stops the workers on exit."""
    executor = build_executor(rt, concurrency=2)
    executor.start()
    try:
        kb_id, pid = start_pipeline(rt, corpus)
        wait_for(lambda: chunks_indexed(rt, pid) >= 2 * BATCH, timeout=120, what="embedding under way")
        yield kb_id, pid
    finally:
        executor.stop()


def test_pause_resume_embeds_nothing_twice_and_equals_a_clean_run(
    rt: Runtime, corpus: list[dict[str, str]], reference: dict[str, Any]
) -> None:
    before = TEXTS_EMBEDDED.value
    with embedding_under_way(rt, corpus) as (_, pid):
        p = local_principal(rt.db)
        pipelines.pause(rt, p, pid)
        wait_for(lambda: running_jobs(rt) == 0, timeout=30, what="the paused pipeline's jobs to stop")
        paused_at = chunks_indexed(rt, pid)
        assert paused_at < N_RECORDS, "the pause must land in the middle of embedding"
        time.sleep(1.5)
        assert chunks_indexed(rt, pid) == paused_at, "a paused pipeline does no work"
        assert pipeline_status(rt, pid) == "paused"
        pipelines.resume(rt, p, pid)
        wait_for(lambda: ended(rt, pid), timeout=180, what="the resumed pipeline to end")
    assert pipeline_status(rt, pid) == "completed"
    assert TEXTS_EMBEDDED.value - before == N_RECORDS, "every chunk went to the model exactly once"
    assert audit(rt) == reference


def test_cancel_leaves_a_queryable_kb_with_what_was_indexed(
    rt: Runtime, corpus: list[dict[str, str]]
) -> None:
    with embedding_under_way(rt, corpus) as (kb_id, pid):
        p = local_principal(rt.db)
        pipelines.cancel(rt, p, pid)
        wait_for(lambda: ended(rt, pid), timeout=60, what="the cancelled pipeline to end")
        time.sleep(0.5)
        assert running_jobs(rt) == 0
    assert pipeline_status(rt, pid) == "cancelled"
    state = audit(rt)
    indexed, cancelled = state["statuses"].get("indexed", 0), state["statuses"].get("cancelled", 0)
    assert indexed >= 2 * BATCH and cancelled > 0 and indexed + cancelled == N_RECORDS
    with rt.db.read_session() as s:
        indexed_titles = set(s.execute(select(Document.title).where(Document.status == "indexed")).scalars())
    # the KB answers with what was indexed, and nothing half-done shows up
    title = sorted(indexed_titles)[0]
    hits = search.search(rt, p, kb_id, title, top_k=5)["results"]
    assert hits and hits[0]["title"] in indexed_titles
    assert all(h["title"] in indexed_titles for h in hits)


LOCKER = r"""
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
db.close()
"""


@pytest.mark.sqlite_only("holds SQLite's write lock from another process")
def test_database_locked_for_ten_seconds_mid_run(
    rt: Runtime, data_dir: Path, corpus: list[dict[str, str]], reference: dict[str, Any]
) -> None:
    """7. Another process holds SQLite's write lock for 10 s in the middle of embedding (the
    workers' writes, heartbeats and reaper all wait, leases run out): the workers recover,
    nothing stays `running`, and the result equals a clean run's."""
    _, pid = start_pipeline(rt, corpus)
    worker = start_worker(data_dir, LOREBASE_EMBED_BATCH_SIZE=str(BATCH))
    locker = None
    try:
        wait_for(lambda: chunks_indexed(rt, pid) >= BATCH, timeout=180, what="embedding under way")
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(data_dir / "lorebase.db"), "10"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        during = chunks_indexed(rt, pid)  # reads still work under WAL; writes wait
        time.sleep(5)
        assert chunks_indexed(rt, pid) == during, "no write lands while the database is locked"
        assert locker.wait(30) == 0
        assert time.monotonic() - locked_at >= 9.5
        wait_for(lambda: ended(rt, pid), timeout=240, what="the pipeline to end after the outage")
        assert worker.poll() is None, "the worker survived the outage"
    finally:
        if locker is not None and locker.poll() is None:
            locker.kill()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert pipeline_status(rt, pid) == "completed"
    assert audit(rt) == reference
