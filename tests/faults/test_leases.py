"""Leases under stress: a reaper racing a completion, a job longer than its lease, a worker cut
off from the database, the same job delivered twice. Cases 4, 5, 6 and 8 of the reliability issue.

Real executors (worker threads, heartbeat and maintenance threads) on a real SQLite file;
case 6 uses real ``lorebase worker`` processes.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conftest import make_settings
from lorebase.assembly import build_executor
from lorebase.db.models import Job, utcnow
from lorebase.errors import LeaseLost
from lorebase.jobs.context import JobContext
from lorebase.jobs.executor import EmbeddedExecutor
from lorebase.runtime import Runtime
from lorebase.services.auth import local_principal
from lorebase.services.settle import settle
from lorebase.tasks import REGISTRY
from lorebase.tasks.embed_chunks import NAME as EMBED_JOB
from lorebase.tasks.process_document import NAME as PROCESS_JOB
from support.faults import audit, ended, pipeline_status, running_jobs, start_pipeline, wait_for
from support.worker import owned_by, start_worker

FAST_LEASES = {"lease_seconds": 1.0, "heartbeat_seconds": 0.25, "reap_seconds": 0.2, "poll_seconds": 0.05}


class Counting:
    """A job type that records each run (in this process) and optionally takes its time,
    checking control between steps as real handlers do."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.runs: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()

    def run(self, ctx: JobContext) -> None:
        with self._lock:
            self.runs.append((ctx.job.id, ctx.job.attempts, ctx.job.owner))
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            ctx.check_control()
            time.sleep(0.05)

    def on_failure(self, ctx: JobContext, session: Session, message: str, kind: str) -> None:
        return None


def _enqueue(rt: Runtime, job_type: str, n: int = 1) -> list[str]:
    ws = local_principal(rt.db).workspace_id
    with rt.db.session() as s:
        ids = [rt.queue.enqueue(s, type=job_type, workspace_id=ws) for _ in range(n)]
    rt.queue.notify()
    return [str(i) for i in ids]


def _job(rt: Runtime, job_id: str) -> Any:
    with rt.db.read_session() as s:
        return s.execute(select(Job).where(Job.id == job_id)).scalar_one()


def test_reaper_racing_a_completing_job_never_undoes_its_success(tmp_path: Path) -> None:
    """4. The reaper and the job's own completion race on an expired lease, 25 times: whenever
    the completion committed, the job stays `succeeded`; when the reaper won, the completion is
    refused (LeaseLost) and the job is back to `pending` for another run, never lost."""
    rt = Runtime(make_settings(tmp_path / "data", jobs=FAST_LEASES))
    outcomes: dict[str, int] = {"completed": 0, "reaped": 0}
    try:
        for _ in range(25):
            (job_id,) = _enqueue(rt, "race")
            job = rt.queue.claim("racer", ("race",))
            assert job is not None and job.id == job_id
            with rt.db.session() as s:  # the lease ran out while the job was finishing
                s.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                )
            start = threading.Barrier(2)
            result: dict[str, Any] = {}

            def complete(
                job: Any = job, start: threading.Barrier = start, result: dict[str, Any] = result
            ) -> None:
                start.wait()
                try:
                    with rt.db.session() as s:
                        rt.queue.succeed(s, job)
                    result["completed"] = True
                except LeaseLost:
                    result["completed"] = False

            def reap(start: threading.Barrier = start) -> None:
                start.wait()
                rt.queue.reap()

            threads = [threading.Thread(target=complete), threading.Thread(target=reap)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            rt.queue.reap()  # a second pass changes nothing either
            row = _job(rt, job_id)
            if result["completed"]:
                outcomes["completed"] += 1
                assert (row.status, row.lease_owner) == ("succeeded", None)
            else:
                outcomes["reaped"] += 1
                assert (row.status, row.attempts) == ("pending", 1)
                again = rt.queue.claim("second", ("race",))
                assert again is not None and again.attempts == 2
                with rt.db.session() as s:
                    rt.queue.succeed(s, again)
                assert _job(rt, job_id).status == "succeeded"
        audit(rt)
    finally:
        rt.close()
    assert sum(outcomes.values()) == 25


def test_a_job_three_times_longer_than_its_lease_runs_exactly_once(tmp_path: Path) -> None:
    """5. Heartbeats, not elapsed time, decide: a 3 s job on a 1 s lease, with a second worker
    reaping and polling all along, runs once, on its first attempt."""
    data_dir = tmp_path / "data"
    slow = Counting(seconds=3.0)
    first = Runtime(make_settings(data_dir, jobs=FAST_LEASES))
    second = Runtime(make_settings(data_dir, jobs=FAST_LEASES))
    workers = [
        EmbeddedExecutor(first, {"slow": slow}, concurrency=2, name="A"),
        EmbeddedExecutor(second, {"slow": slow}, concurrency=2, name="B"),
    ]
    try:
        for w in workers:
            w.start()
        (job_id,) = _enqueue(first, "slow")
        wait_for(
            lambda: _job(first, job_id).status == "succeeded", timeout=30, what="the slow job to succeed"
        )
        time.sleep(1.0)  # a late duplicate would show up here
        audit(first)
    finally:
        for w in workers:
            w.stop()
        first.close()
        second.close()
    assert len(slow.runs) == 1, slow.runs
    assert slow.runs[0][1] == 1  # attempt 1: never reaped


def test_a_worker_cut_off_from_the_database_cannot_write_after_the_takeover(
    rt: Runtime, data_dir: Path, corpus: list[dict[str, str]], reference: dict[str, Any]
) -> None:
    """6. Worker A's heartbeats are blocked (alive, cut off) while it embeds one batch longer
    than its lease; B reaps the lease and takes the job over. A's batch write is refused by
    the fence (it logs the lost lease), and the final state equals a clean run's."""
    _, pid = start_pipeline(rt, corpus)
    env = {
        "LOREBASE_JOBS__LEASE_SECONDS": "1",
        "LOREBASE_JOBS__HEARTBEAT_SECONDS": "0.5",
        "LOREBASE_JOBS__MAX_ATTEMPTS": "20",
    }
    cut_off = start_worker(
        data_dir,
        LOREBASE_FAULTS="heartbeat=block",
        LOREBASE_EMBED_BATCH_SIZE="48",
        LOREBASE_JOBS__REAP_SECONDS="3600",
        **env,
    )
    healthy = None
    try:

        def a_embeds() -> bool:
            with rt.db.read_session() as s:
                owner = s.execute(
                    select(Job.lease_owner).where(Job.type == EMBED_JOB, Job.status == "running")
                ).scalar()
            return bool(owner) and owned_by(owner, cut_off)

        wait_for(a_embeds, timeout=120, what="worker A to start embedding")
        healthy = start_worker(data_dir, LOREBASE_EMBED_BATCH_SIZE="8", **env)
        wait_for(lambda: ended(rt, pid), timeout=240, what="the pipeline to end with B's help")
    finally:
        for w in (cut_off, healthy):
            if w is not None and w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in (cut_off, healthy):
            if w is not None:
                w.wait(60)
    assert cut_off.stderr is not None
    log = cut_off.stderr.read().decode()
    assert "lost its lease" in log, log[-3000:]
    assert pipeline_status(rt, pid) == "completed"
    assert audit(rt) == reference


def test_the_same_job_delivered_twice_has_one_effect(
    rt: Runtime, corpus: list[dict[str, str]], reference: dict[str, Any]
) -> None:
    """8. Delivered twice: (a) two workers racing for one pending job, 20 times: exactly one
    claim wins; (b) a process job whose work was saved but whose completion was lost (worker
    gone before the ack) is reaped and delivered again: one set of chunks."""
    ws = local_principal(rt.db).workspace_id
    for _ in range(20):
        with rt.db.session() as s:
            rt.queue.enqueue(s, type="double", workspace_id=ws)
        start = threading.Barrier(2)
        won: list[Any] = []

        def grab(name: str, start: threading.Barrier = start, won: list[Any] = won) -> None:
            start.wait()
            job = rt.queue.claim(name, ("double",))
            if job is not None:
                won.append(job)

        threads = [threading.Thread(target=grab, args=(n,)) for n in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1
        with rt.db.session() as s:
            rt.queue.succeed(s, won[0])

    _, pid = start_pipeline(rt, corpus)
    first = rt.queue.claim("lost-ack", (PROCESS_JOB,))
    assert first is not None
    REGISTRY.handler(PROCESS_JOB).run(JobContext(rt, first))  # the work is saved; the ack never comes
    with rt.db.session() as s:
        s.execute(
            update(Job).where(Job.id == first.id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert first.id in {j for j in _reaped_jobs(rt)}
    build_executor(rt, concurrency=1).run_until_idle()
    settle(rt, pid)
    assert _job(rt, first.id).status == "succeeded" and _job(rt, first.id).attempts == 2
    assert running_jobs(rt) == 0
    assert audit(rt) == reference


def _reaped_jobs(rt: Runtime) -> list[str]:
    rt.queue.reap()
    with rt.db.read_session() as s:
        return list(s.execute(select(Job.id).where(Job.status == "pending", Job.attempts >= 1)).scalars())
