"""The scheduler (``jobs/scheduler.py``): each periodic task is queued exactly once per period,
however many processes tick it.

Real processes: ``lorebase serve`` with an embedded worker and two ``lorebase worker`` processes
on one database (the SQLite file, or on PostgreSQL runs the data dir's database), each ticking
every 0.2 s for periods of 2 s. And the compare-and-set itself, from many threads at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from conftest import make_settings
from lorebase.db.engine import Database
from lorebase.db.models import Job
from lorebase.jobs.scheduler import SYSTEM_WORKSPACE, Scheduler, period_of
from lorebase.runtime import Runtime
from lorebase.settings import Settings
from lorebase.tasks import REGISTRY
from support import zygote
from support.cluster import free_port
from support.testdb import database_url_for
from support.waiting import wait_for
from support.worker import start_worker, stop_worker

EVERY = 2.0
PERIODIC = sorted(s.name for s in REGISTRY if s.every is not None)
FAST = {
    "LOREBASE_SCHEDULER__TICK_SECONDS": "0.2",
    "LOREBASE_SCHEDULER__CLEANUP_SECONDS": str(EVERY),
    "LOREBASE_SCHEDULER__REFRESH_SECONDS": str(EVERY),
    "LOREBASE_JOBS__REAP_SECONDS": "0.2",  # the maintenance thread, which ticks, runs this often
}


def _serve(tmp_path: Path, settings: Settings) -> tuple[Any, int]:
    """``lorebase serve --workers 1`` and its port, forked from the session's zygote like the
    workers (the imports done once), or a new process when the zygote is off."""
    log, port = tmp_path / "serve.log", free_port()
    env = {
        **os.environ,
        "LOREBASE_DATA_DIR": str(settings.data_dir),
        **({"LOREBASE_DATABASE_URL": url} if (url := database_url_for(settings.data_dir)) else {}),
        **FAST,
    }
    args = ["serve", "--workers", "1", "--port", str(port)]
    forks = zygote.get()
    if forks is not None:
        return forks.spawn(args, env, zygote.ForkedProcess, log=log), port
    with log.open("wb") as out:
        cmd = [sys.executable, "-m", "lorebase.cli.main", *args]
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT), port


def _wait_healthy(proc: Any, port: int, log: Path) -> None:
    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 120, "lorebase serve", every=0.2)


def _periodic_jobs(db: Database) -> list[tuple[str, int, str]]:
    with db.read_session() as s:
        rows = s.execute(
            select(Job.type, Job.payload, Job.status).where(Job.workspace_id == SYSTEM_WORKSPACE)
        ).all()
    return [(t, int(payload["period"]), status) for t, payload, status in rows]


@pytest.mark.embedded_only("ticks in the embedded workers' maintenance threads")
def test_three_processes_queue_each_periodic_task_once_per_period(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")  # the database the processes share
    server, port = _serve(tmp_path, settings)
    procs = [server, *(start_worker(settings.data_dir, concurrency=1, **FAST) for _ in range(2))]
    try:
        _wait_healthy(server, port, tmp_path / "serve.log")
        start = datetime.now(UTC)
        time.sleep(8)
        end = datetime.now(UTC)
        assert [p.poll() for p in procs] == [None] * 3, "a process died"
        db = Database(settings.resolved_database_url)
        jobs = _periodic_jobs(db)
        db.dispose()
        for p in procs:
            p.send_signal(signal.SIGTERM)  # all drain at once
    finally:
        for p in procs:
            stop_worker(p)
    per_period = Counter((task, period) for task, period, _ in jobs)
    assert per_period and max(per_period.values()) == 1, [k for k, n in per_period.items() if n > 1]
    first, last = period_of(start, EVERY), period_of(end, EVERY)
    for task in PERIODIC:
        periods = sorted(p for t, p in per_period if t == task)
        assert set(range(first + 1, last)) <= set(periods), (task, periods, first, last)
        assert periods[-1] <= last
        watched = [p for p in periods if first <= p <= last]  # the server ticked before `start` too
        assert abs(len(watched) - (end - start).total_seconds() / EVERY) <= 1.5, (task, watched)
    # and they ran: every job of a period before the last is done
    assert {status for _, period, status in jobs if period < last - 1} == {"succeeded"}


def test_ticks_from_many_threads_queue_one_job_per_task_and_period(runtime: Runtime) -> None:
    """Each period is ticked by 8 threads at once, twice: the second time after its jobs ran (so
    the pending jobs' dedupe key cannot be what stops a second job: only the compare-and-set)."""
    threads, periods = 8, 3
    schedulers = [Scheduler(runtime.db, runtime.queue, REGISTRY, runtime.settings) for _ in range(threads)]
    every = runtime.settings.scheduler.cleanup_seconds
    base = datetime.fromtimestamp((period_of(datetime.now(UTC), every) + 1) * every, tz=UTC)
    queued: list[str] = []
    lock = threading.Lock()

    def tick(scheduler: Scheduler, barrier: threading.Barrier, now: datetime) -> None:
        barrier.wait()  # all at once
        ids = scheduler.tick(now)
        with lock:
            queued.extend(ids)

    for n in range(periods):
        for offset in (1, 2):  # the same period twice
            barrier = threading.Barrier(threads)
            now = base + timedelta(seconds=n * every + offset)
            pool = [threading.Thread(target=tick, args=(s, barrier, now)) for s in schedulers]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            with runtime.db.session() as s:  # they ran, as a worker would have run them
                s.execute(update(Job).where(Job.workspace_id == SYSTEM_WORKSPACE).values(status="succeeded"))

    jobs = _periodic_jobs(runtime.db)
    assert len(queued) == len(set(queued)) == len(jobs) == periods * len(PERIODIC)
    # each task's own period numbers at the ticks (cleanup_seconds or refresh_seconds apart)
    own = {s.name: s.every(runtime.settings) for s in REGISTRY if s.every is not None}
    assert Counter((t, p) for t, p, _ in jobs) == Counter(
        (task, period_of(base + timedelta(seconds=n * every), own[task]))
        for task in PERIODIC
        for n in range(periods)
    )
