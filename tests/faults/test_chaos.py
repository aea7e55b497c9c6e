"""Case 13: a minute of ingestion while two worker processes are SIGKILLed and restarted at
random moments, a kill every 2.75 s on average (at least 15); then the audit, against a clean
run of the same records: every document indexed, every pipeline completed, the chunks equal to
a clean run's, no chunk id twice.

The seed is printed (and can be set with ``LOREBASE_CHAOS_SEED``) so a failure can be replayed;
``LOREBASE_CHAOS_SECONDS`` makes the storm longer (at least one kill per 5 s is asserted).

Attempts: a lost worker counts against a job's ``max_attempts`` only when its attempt saved
no progress, and progress starts the count afresh (``jobs/retry.py``): an embed loop that
loses a dozen workers, each after saving batches, is never dead-lettered for it. But a storm
this dense also kills attempts before they save anything: a job claimed by a freshly started
worker (which loads the model for its first batch) is often killed again first, and with the
default 5 attempts an embed job was seen dead after 5 such losses in a row (two storms on the
machine at once). So every job has 50 attempts here: the case is about convergence; the rule
has its own deterministic case (``test_crashes.py``: one attempt per embed job, a worker killed
after every second batch) and dead letters theirs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conftest import make_settings
from lorebase.db.models import Document, Job, Pipeline
from lorebase.runtime import Runtime
from support.faults import audit, clean_run, ended, pipeline_status, records, start_pipeline, wait_for
from support.worker import start_worker

from .conftest import BATCH

CHAOS_SECONDS = int(os.environ.get("LOREBASE_CHAOS_SECONDS") or 60)
MIN_KILLS = max(15, CHAOS_SECONDS // 5)
WAVE = 60  # records per pipeline; a new one starts whenever the previous ones are done
ATTEMPTS = 50
ENV = {"LOREBASE_EMBED_BATCH_SIZE": str(BATCH), "LOREBASE_JOBS__MAX_ATTEMPTS": str(ATTEMPTS)}


def _jobs(rt: Runtime) -> list[tuple[str, str, int, int]]:
    """Per job type and status: the most claims (workers it met) and attempts (those counted)."""
    with rt.db.read_session() as s:
        rows = s.execute(
            select(Job.type, Job.status, func.max(Job.claims), func.max(Job.attempts)).group_by(
                Job.type, Job.status
            )
        ).all()
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def _failures(rt: Runtime) -> dict[str, int]:
    """Why documents did not end indexed: error -> how many (for the failure message)."""
    with rt.db.read_session() as s:
        rows = s.execute(
            select(Document.error, func.count()).where(Document.status != "indexed").group_by(Document.error)
        ).all()
    return {str(error): n for error, n in rows}


@pytest.mark.timeout(900)
def test_random_kills_and_restarts_for_a_minute(tmp_path: Path, data_dir: Path) -> None:
    # The jobs are enqueued here (at finalize) and by the workers: both must say 50.
    rt = Runtime(make_settings(data_dir, embed_batch_size=BATCH, jobs={"max_attempts": ATTEMPTS}))
    try:
        _storm(tmp_path, rt, data_dir)
    finally:
        rt.close()


def _storm(tmp_path: Path, rt: Runtime, data_dir: Path) -> None:
    seed = int(os.environ.get("LOREBASE_CHAOS_SEED") or random.randrange(1 << 30))
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    workers: list[subprocess.Popen[bytes]] = [start_worker(data_dir, **ENV) for _ in range(2)]
    ingested: list[dict[str, str]] = []
    pipelines: list[str] = []
    kills = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < CHAOS_SECONDS:
            if all(ended(rt, pid) for pid in pipelines):
                wave = records(WAVE, skip=1000 + len(ingested))
                ingested += wave
                pipelines.append(start_pipeline(rt, wave, name=f"wave{len(pipelines)}")[1])
            time.sleep(rng.uniform(0.5, 4.0))
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(10)
            kills += 1
            time.sleep(rng.uniform(0.0, 1.0))
            workers[victim] = start_worker(data_dir, **ENV)
        wait_for(
            lambda: all(ended(rt, pid) for pid in pipelines),
            timeout=300,
            what="every pipeline to end after the chaos",
            every=0.5,
        )
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)
    print(f"chaos: {kills} kills, {len(pipelines)} pipelines, {len(ingested)} records")
    print(f"chaos: jobs (type, status, most claims, most attempts): {_jobs(rt)}")
    with rt.db.read_session() as s:  # settle's safety net: uncovered work queued again
        print(f"chaos: settle repairs: {s.execute(select(func.sum(Pipeline.repairs))).scalar() or 0}")
    assert kills >= MIN_KILLS, f"only {kills} kills in {CHAOS_SECONDS}s"
    got = audit(rt)
    assert got["statuses"] == {"indexed": len(ingested)}, f"seed {seed}: {_failures(rt)}"
    assert {pipeline_status(rt, pid) for pid in pipelines} == {"completed"}, f"seed {seed}"

    clean = Runtime(make_settings(tmp_path / "clean", embed_batch_size=BATCH))
    try:
        expected = clean_run(clean, ingested)
    finally:
        clean.close()
    assert got["chunks"] == expected["chunks"], f"seed {seed}"
