"""Worker pools with Celery on Redis: a pooled job is sent to its pool's queue
(``<prefix>.<kind>.<pool>``) and run by a real ``lorebase worker --pool big`` process; a default
Celery worker, consuming only the default queues, never sees it. Real Redis, real worker
processes, the real job table (SQLite, shared by the processes through the data dir)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from conftest import make_settings
from lorebase.assembly import make_sender
from lorebase.db.models import Job, Workspace
from lorebase.jobs.dispatch import Dispatcher
from lorebase.runtime import Runtime
from lorebase.services import workspaces
from support.cluster import REDIS_URL, delete_keys, redis_available
from support.testdb import ON_POSTGRES
from support.waiting import wait_for

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="the worker processes share the SQLite data dir")


@pytest.fixture
def prefix() -> Iterator[str]:
    if not redis_available():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not reachable (CI must start it)")
        pytest.skip("Redis is not reachable")
    name = f"lbt{uuid.uuid4().hex[:10]}"
    yield name
    delete_keys(name)


def _worker(data_dir: Path, prefix: str, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LOREBASE_DATA_DIR": str(data_dir),
        "LOREBASE_EXECUTOR": "celery",
        "LOREBASE_REDIS_URL": REDIS_URL,
        "LOREBASE_QUEUE_PREFIX": prefix,
        "LOREBASE_JOBS__POLL_SECONDS": "0.1",
        "LOREBASE_SCHEDULER__ENABLED": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "lorebase.cli.main",
        "worker",
        "--concurrency",
        "1",
        "--queues",
        "process",
        *args,
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def test_a_pooled_job_goes_to_its_pools_queue_and_only_a_pool_worker_runs_it(
    tmp_path: Path, prefix: str
) -> None:
    settings = make_settings(tmp_path / "data", executor="celery", redis_url=REDIS_URL, queue_prefix=prefix)
    rt = Runtime(settings)
    try:
        with rt.db.session() as s:
            s.add(Workspace(id="big", name="big"))
        workspaces.update_workspace(rt.db, "big", pool="big")
        with rt.db.session() as s:  # a cheap real task (it purges expired drafts), for each tenant
            job_id = rt.queue.enqueue(s, type="purge_drafts", workspace_id="big", payload={})
            other = rt.queue.enqueue(s, type="purge_drafts", workspace_id="small", payload={})
        assert Dispatcher(rt, make_sender(settings)).dispatch_once() == 2
        broker = redis.Redis.from_url(REDIS_URL)
        assert broker.llen(f"{prefix}.process.big") == 1 and broker.llen(f"{prefix}.process") == 1

        default = _worker(settings.data_dir, prefix)
        try:  # the default worker runs the other tenant's job, never the pooled one
            wait_for(lambda: _status(rt, other) == "succeeded", timeout=60, what="the default worker")
            assert _status(rt, job_id) == "pending"
            assert broker.llen(f"{prefix}.process.big") == 1  # its message waits on the pool's queue
        finally:
            _stop(default)
        pooled = _worker(settings.data_dir, prefix, "--pool", "big")
        try:
            wait_for(lambda: _status(rt, job_id) == "succeeded", timeout=60, what="the pool worker to run it")
        finally:
            _stop(pooled)
        with rt.db.read_session() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.pool == "big"
    finally:
        rt.close()


def _status(rt: Runtime, job_id: str | None) -> str | None:
    with rt.db.read_session() as s:
        return s.execute(select(Job.status).where(Job.id == job_id)).scalar()
