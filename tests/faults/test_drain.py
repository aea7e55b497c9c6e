"""SIGTERM drains (case 2 of the reliability issue): with two jobs in flight, the short one
finishes, the embed loop stops at its next batch, releases its lease without spending an
attempt, and a later worker resumes it without embedding anything twice."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lorebase.db.models import Job
from lorebase.runtime import Runtime
from lorebase.tasks.embed_chunks import NAME as EMBED_JOB
from lorebase.tasks.process_document import NAME as PROCESS_JOB
from support.faults import audit, chunks_indexed, ended, pipeline_status, records, start_pipeline, wait_for
from support.worker import start_worker

from .conftest import BATCH, N_RECORDS


def _embedded_by(log: str) -> int:
    found = re.findall(r"(\d+) texts embedded by this process", log)
    assert found, log[-3000:]
    return sum(int(n) for n in found)  # one line per process that embedded (a Celery pool: several)


def test_sigterm_with_two_jobs_in_flight(rt: Runtime, data_dir: Path, corpus: list[dict[str, str]]) -> None:
    _, long_pid = start_pipeline(rt, corpus, name="long")
    # every process job takes 3 s more than it needs: the short job is surely in flight
    worker = start_worker(
        data_dir, LOREBASE_EMBED_BATCH_SIZE=str(BATCH), LOREBASE_FAULTS="process.before_save=sleep:3"
    )
    try:
        wait_for(
            lambda: chunks_indexed(rt, long_pid) >= BATCH, timeout=180, what="the embed loop to be under way"
        )
        _, short_pid = start_pipeline(rt, records(1, skip=300), name="short")

        def both_running() -> bool:
            with rt.db.read_session() as s:
                kinds = s.execute(select(Job.type, Job.pipeline_id).where(Job.status == "running")).all()
            return (EMBED_JOB, long_pid) in kinds and (PROCESS_JOB, short_pid) in kinds

        wait_for(both_running, timeout=60, what="the short job and the embed loop running together")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, "a drained worker exits cleanly"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.stderr is not None
    first_log = worker.stderr.read().decode()
    with rt.db.read_session() as s:
        jobs = list(s.execute(select(Job)).scalars())
    (short_job,) = [j for j in jobs if (j.type, j.pipeline_id) == (PROCESS_JOB, short_pid)]
    assert short_job.status == "succeeded", "the short job finished instead of being dropped"
    embed_jobs = [j for j in jobs if (j.type, j.pipeline_id) == (EMBED_JOB, long_pid)]
    # the loop's job went back to pending with its attempt returned; or, when a process job of the
    # long pipeline finished during the loop and queued a pending twin, it was closed in the twin's
    # favour (at most one pending job per dedupe key). Either way exactly one fresh job is left.
    pending = [(j.attempts, j.lease_owner) for j in embed_jobs if j.status == "pending"]
    assert pending == [(0, None)], "the embed loop released its lease and its attempt"
    others = {(j.status, (j.last_error or "").startswith("superseded by job")) for j in embed_jobs}
    assert others <= {("pending", False), ("succeeded", False), ("cancelled", True)}, others
    done_before = chunks_indexed(rt, long_pid)
    assert BATCH <= done_before < N_RECORDS
    assert pipeline_status(rt, long_pid) == "running"

    worker = start_worker(data_dir, LOREBASE_EMBED_BATCH_SIZE=str(BATCH))
    try:
        wait_for(
            lambda: ended(rt, long_pid) and ended(rt, short_pid), timeout=240, what="both pipelines to end"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert worker.stderr is not None
    second_log = worker.stderr.read().decode()
    assert pipeline_status(rt, long_pid) == pipeline_status(rt, short_pid) == "completed"
    # nothing embedded twice: the two workers together sent each chunk to the model once
    assert _embedded_by(first_log) + _embedded_by(second_log) == N_RECORDS + 1
    assert _embedded_by(second_log) == N_RECORDS + 1 - done_before
    state: dict[str, Any] = audit(rt)
    assert state["statuses"] == {"indexed": N_RECORDS + 1}
