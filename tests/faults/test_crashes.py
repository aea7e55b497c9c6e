"""Workers that die: killed from outside, or at a chosen point of the code; a poison document.

Cases 1, 3 and 9 of the reliability issue. Each ends with the audit of ``support/faults.py``.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import or_, select

from lorebase.db.models import Document, Job
from lorebase.runtime import Runtime
from lorebase.services import jobs as job_service
from lorebase.services.auth import local_principal
from lorebase.tasks.embed_chunks import NAME as EMBED_JOB
from lorebase.tasks.process_document import NAME as PROCESS_JOB
from support.faults import audit, chunks_indexed, ended, pipeline_status, records, start_pipeline, wait_for
from support.worker import start_worker

from .conftest import BATCH, N_RECORDS

WORKER_ENV = {"LOREBASE_EMBED_BATCH_SIZE": str(BATCH)}


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def _finish(rt: Runtime, data_dir: Path, pipeline_id: str, **env: str) -> None:
    """Run a fresh worker until the pipeline ends."""
    worker = start_worker(data_dir, **WORKER_ENV, **env)
    try:
        wait_for(lambda: ended(rt, pipeline_id), timeout=240, what="the pipeline to end after the restart")
    finally:
        _stop(worker)


def test_sigkill_during_embedding_then_restart(
    rt: Runtime, data_dir: Path, corpus: list[dict[str, str]], reference: dict[str, Any]
) -> None:
    """1. SIGKILL a worker during embedding; a restarted one completes with no duplicates."""
    _, pid = start_pipeline(rt, corpus)
    worker = start_worker(data_dir, **WORKER_ENV)
    try:
        wait_for(lambda: chunks_indexed(rt, pid) >= 2 * BATCH, timeout=180, what="two embed batches")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        _stop(worker)
    assert chunks_indexed(rt, pid) < N_RECORDS, "the kill must land in the middle of embedding"
    _finish(rt, data_dir, pid)
    assert pipeline_status(rt, pid) == "completed"
    assert audit(rt) == reference


@pytest.mark.parametrize(
    "fault",
    [
        "embed.after_batch=kill@2",  # vectors of batch 2 committed, the embed job not done
        "job.before_succeed=kill@1",  # the first job's work saved, the job still `running`
        "job.before_succeed=kill@3",
    ],
)
def test_crash_between_saving_and_marking_done_converges(
    rt: Runtime, data_dir: Path, corpus: list[dict[str, str]], reference: dict[str, Any], fault: str
) -> None:
    """3. A crash after the vector write and before the job is marked done: the re-run converges."""
    _, pid = start_pipeline(rt, corpus)
    # one worker thread (Celery: one pool process): a fault point counts per process, and with two
    # pool processes the 4-5 jobs of this corpus can split 2 + 2, so that no process ever reaches
    # its third `job.before_succeed` (seen once in CI, on Celery)
    crashing = start_worker(data_dir, concurrency=1, **WORKER_ENV, LOREBASE_FAULTS=fault)
    try:
        crashing.wait(180)
    finally:
        _stop(crashing)
    assert crashing.returncode == -signal.SIGKILL, "the armed fault point must have been reached"
    with rt.db.read_session() as s:
        held = s.execute(select(Job.type).where(Job.status == "running")).scalars().all()
    assert held, "the crashed job still holds its lease (so does any job the other thread was running)"
    _finish(rt, data_dir, pid)
    assert pipeline_status(rt, pid) == "completed"
    assert audit(rt) == reference
    with rt.db.read_session() as s:
        taken_over = (
            s.execute(
                select(Job.id).where(or_(Job.claims > 1, Job.last_error.like("worker lost (lease expired)%")))
            )
            .scalars()
            .all()
        )
    # the reaper took the lease back: the job was claimed again (``claims`` counts every claim;
    # ``attempts`` starts afresh after progress, and a re-run that succeeds clears last_error), or
    # a newer pending twin (same dedupe key: the embed loop) superseded it
    assert taken_over, "the crashed job was recovered by the reaper"


def test_embed_loop_superseded_and_reaped_at_its_last_attempt_still_indexes_everything(
    rt: Runtime, data_dir: Path, corpus: list[dict[str, str]], reference: dict[str, Any]
) -> None:
    """The supersede/reap race (regression): every worker dies right after its second embed
    batch, and the embed jobs have a single attempt. The first loop is superseded by the pending
    twin that the other process jobs queued meanwhile; the twin, reaped, had saved progress
    every time. Before the attempt rule, the reaper ended it ``dead`` without telling its
    documents, the pipeline was left with no job while chunks waited, and settling failed them
    ("processing stopped before this document finished"). Now a lost attempt that saved progress
    does not count, and the pipeline completes exactly as a clean run."""
    _, pid = start_pipeline(rt, corpus)  # process jobs: this runtime's 5 attempts
    env = {"LOREBASE_FAULTS": "embed.after_batch=kill@2", "LOREBASE_JOBS__MAX_ATTEMPTS": "1"}
    lives = 0
    while not ended(rt, pid) and lives < 8:
        worker = start_worker(data_dir, **WORKER_ENV, **env)
        lives += 1
        try:
            wait_for(
                lambda w=worker: w.poll() is not None or ended(rt, pid), timeout=180, what="a worker life"
            )
        finally:
            _stop(worker)
    with rt.db.read_session() as s:
        embed_jobs = s.execute(select(Job.status, Job.last_error).where(Job.type == EMBED_JOB)).all()
        failures = s.execute(select(Document.error).where(Document.status != "indexed")).scalars().all()
    assert failures == [], f"documents failed: {failures}"
    assert pipeline_status(rt, pid) == "completed"
    assert lives >= 3, "each worker life embeds two batches of six: at least three lives"
    assert "dead" not in {status for status, _ in embed_jobs}, embed_jobs
    assert audit(rt) == reference


def test_poison_document_ends_dead_alone_and_the_queue_keeps_flowing(rt: Runtime, data_dir: Path) -> None:
    """9. A document that kills its parser every time: `dead` after max attempts; its
    siblings (grouped in the same job at first) are indexed; a later pipeline still runs."""
    docs = records(12, skip=100)
    poison = {
        "external_id": "poison",
        "title": "Poison",
        "text": "POISON-7f3a crashes every parser it meets.",
    }
    _, pid = start_pipeline(rt, [*docs[:6], poison, *docs[6:]], name="poisoned")
    env = {
        "LOREBASE_FAULTS": "parse.poison=POISON-7f3a",
        "LOREBASE_JOBS__MAX_ATTEMPTS": "3",
        "LOREBASE_JOBS__BACKOFF_BASE_SECONDS": "0.2",
        "LOREBASE_JOBS__BACKOFF_MAX_SECONDS": "0.5",
    }
    worker = start_worker(data_dir, **WORKER_ENV, **env)
    try:
        wait_for(lambda: ended(rt, pid), timeout=240, what="the poisoned pipeline to end")
        _, later = start_pipeline(rt, records(5, skip=200), name="later")
        wait_for(lambda: ended(rt, later), timeout=180, what="a later pipeline to end")
        assert worker.poll() is None, "the worker itself survived every parser crash"
    finally:
        _stop(worker)
    assert pipeline_status(rt, pid) == "completed_with_errors"
    assert pipeline_status(rt, later) == "completed"
    with rt.db.read_session() as s:
        docs_by_id = {d.external_id: d for d in s.execute(select(Document)).scalars()}
        poison_jobs = (
            s.execute(select(Job).where(Job.type == PROCESS_JOB, Job.document_id == docs_by_id["poison"].id))
            .scalars()
            .all()
        )
    assert docs_by_id["poison"].status == "failed"
    assert "parser process died" in (docs_by_id["poison"].error or "")
    assert [(j.status, j.attempts) for j in poison_jobs] == [("dead", 3)]
    assert sorted(k for k, d in docs_by_id.items() if d.status == "indexed") == sorted(
        [d["external_id"] for d in docs] + [d["external_id"] for d in records(5, skip=200)]
    )
    audit(rt)

    # the dead letter is listed with its error, and can be retried one by one: with the parser
    # fixed (no fault armed), the document is indexed and the pipeline completes
    p = local_principal(rt.db)
    dead = job_service.list_jobs(rt, p, status="dead", kb_id=None, limit=10, offset=0)
    assert [(j["id"], j["document_id"]) for j in dead["items"]] == [
        (poison_jobs[0].id, docs_by_id["poison"].id)
    ]
    assert "parser process died" in dead["items"][0]["last_error"]
    job_service.retry_job(rt, p, poison_jobs[0].id)
    worker = start_worker(data_dir, **WORKER_ENV)
    try:
        wait_for(lambda: ended(rt, pid), timeout=120, what="the retried pipeline to end")
    finally:
        _stop(worker)
    assert pipeline_status(rt, pid) == "completed"
    assert audit(rt)["statuses"] == {"indexed": 18}
