"""Tenant tiers: a workspace's ``pool`` decides which workers take its jobs, its ``priority`` is
added to its jobs', and the fairness shares still hold across pools and priorities.

Real job table (SQLite, or PostgreSQL with ``LOREBASE_TEST_DATABASE=postgres``), real worker
threads (``EmbeddedExecutor``), jobs queued through ``JobQueue.enqueue`` as every task queues
them; the handlers only record what ran, where and when.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conftest import make_settings
from lorebase.db.models import Job, KnowledgeBase, Pipeline, Workspace
from lorebase.errors import InvalidInput
from lorebase.jobs.context import JobContext
from lorebase.jobs.executor import EmbeddedExecutor
from lorebase.runtime import Runtime
from lorebase.services import workspaces
from support.waiting import wait_for


class Recorder:
    """Records each job's workspace and the most jobs of one workspace running at once."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.ran: list[tuple[str, str]] = []  # (workspace, executor pool)
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.peak_total = 0

    def run(self, ctx: JobContext[Any]) -> None:
        ws = ctx.job.workspace_id
        with self.lock:
            self.running[ws] += 1
            self.peak[ws] = max(self.peak[ws], self.running[ws])
            self.peak_total = max(self.peak_total, sum(self.running.values()))
        time.sleep(self.seconds)
        with self.lock:
            self.running[ws] -= 1
            self.ran.append((ws, threading.current_thread().name))

    def on_failure(self, ctx: JobContext[Any], session: Session, message: str, kind: str) -> None:
        pass


def tenant(rt: Runtime, name: str, *, priority: int = 0, pool: str | None = None) -> str:
    with rt.db.session() as s:
        s.add(Workspace(id=name, name=name))
    workspaces.update_workspace(rt.db, name, priority=priority, pool=pool)
    return name


def pipeline_with_jobs(rt: Runtime, workspace_id: str, n: int) -> str:
    """A queued pipeline of ``n`` jobs, queued as the tasks queue theirs."""
    with rt.db.session() as s:
        kb = KnowledgeBase(workspace_id=workspace_id, name=f"kb-{workspace_id}")
        s.add(kb)
        s.flush()
        p = Pipeline(kb_id=kb.id, workspace_id=workspace_id, status="queued")
        s.add(p)
        s.flush()
        for _ in range(n):
            rt.queue.enqueue(s, type="t", workspace_id=workspace_id, pipeline_id=p.id, priority=5)
        return p.id


def jobs_of(rt: Runtime, workspace_id: str) -> list[Job]:
    with rt.db.read_session() as s:
        return list(s.execute(select(Job).where(Job.workspace_id == workspace_id)).scalars())


@pytest.fixture
def rt(tmp_path: Any) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "data", jobs={"max_running_per_workspace": 1}))
    yield runtime
    runtime.close()


def executor(
    rt: Runtime, recorder: Recorder, *, pool: str | None = None, threads: int = 2
) -> EmbeddedExecutor:
    ex = EmbeddedExecutor(rt, {"t": recorder}, concurrency=threads, pool=pool, name=pool or "default")
    ex.start()
    return ex


def test_a_pool_worker_takes_only_its_pools_jobs_and_a_default_worker_none_of_them(rt: Runtime) -> None:
    big, small = tenant(rt, "big", pool="big"), tenant(rt, "small")
    pipeline_with_jobs(rt, big, 3)
    pipeline_with_jobs(rt, small, 3)
    assert {j.pool for j in jobs_of(rt, big)} == {"big"} and {j.pool for j in jobs_of(rt, small)} == {None}
    default = Recorder()
    ex = executor(rt, default)
    try:
        wait_for(lambda: all(j.status == "succeeded" for j in jobs_of(rt, small)), what="the small jobs")
        time.sleep(0.5)  # polls enough to have taken a big job, were it allowed to
        assert {ws for ws, _ in default.ran} == {small}
        assert all(j.status == "pending" for j in jobs_of(rt, big))
    finally:
        ex.stop()
    pooled = Recorder()
    ex = executor(rt, pooled, pool="big")
    try:
        wait_for(lambda: all(j.status == "succeeded" for j in jobs_of(rt, big)), what="the big jobs")
        assert {ws for ws, _ in pooled.ran} == {big}
    finally:
        ex.stop()


def test_a_priority_tenants_pipeline_starts_before_an_earlier_normal_one(rt: Runtime) -> None:
    normal, premium = tenant(rt, "normal"), tenant(rt, "premium", priority=10)
    first = pipeline_with_jobs(rt, normal, 2)  # queued first
    second = pipeline_with_jobs(rt, premium, 2)
    assert {j.priority for j in jobs_of(rt, premium)} == {15}  # the task's 5 + the tier's 10
    recorder = Recorder()
    ex = executor(rt, recorder, threads=1)
    try:
        wait_for(lambda: len(recorder.ran) == 4, what="all four jobs")
    finally:
        ex.stop()
    assert [ws for ws, _ in recorder.ran] == [premium, premium, normal, normal]
    with rt.db.read_session() as s:
        started = {p.id: p.started_at for p in s.execute(select(Pipeline)).scalars()}
    first_at, second_at = started[first], started[second]
    assert first_at is not None and second_at is not None
    assert second_at < first_at


def test_the_workspace_share_holds_across_pools_and_priorities(rt: Runtime) -> None:
    a = tenant(rt, "a", priority=50, pool="big")
    c = tenant(rt, "c", priority=50, pool="big")
    b = tenant(rt, "b")
    for ws in (a, c, b):
        pipeline_with_jobs(rt, ws, 4)
    recorder = Recorder(seconds=0.15)
    pooled, default = executor(rt, recorder, pool="big", threads=3), executor(rt, recorder, threads=3)
    try:
        wait_for(lambda: len(recorder.ran) == 12, timeout=30, what="all twelve jobs")
    finally:
        pooled.stop()
        default.stop()
    # max_running_per_workspace=1: never two jobs of a tenant at once, however urgent or pooled
    assert dict(recorder.peak) == {a: 1, b: 1, c: 1}
    assert recorder.peak_total >= 2  # the other tenants' jobs did run beside them
    by_pool = {
        ws: {name.rsplit("-", 1)[0].rsplit(":", 1)[-1] for w, name in recorder.ran if w == ws}
        for ws in (a, b, c)
    }
    assert by_pool == {a: {"big"}, c: {"big"}, b: {"default"}}


def test_changing_the_tier_moves_pending_jobs_and_applies_to_the_next_job(rt: Runtime) -> None:
    ws = tenant(rt, "t")
    pipeline_with_jobs(rt, ws, 2)
    with rt.db.session() as s:  # a job that was sent to a broker: sent again, to the new pool's queue
        s.execute(update(Job).values(dispatched_at=Job.created_at))
    workspaces.update_workspace(rt.db, ws, priority=-3, pool="slow")
    moved = jobs_of(rt, ws)
    assert {(j.priority, j.pool, j.dispatched_at) for j in moved} == {(2, "slow", None)}
    pipeline_with_jobs(rt, ws, 1)  # no stale tier: read in the enqueuing transaction
    assert sorted((j.priority, j.pool) for j in jobs_of(rt, ws)) == [(2, "slow")] * 3
    due = {job_id: pool for job_id, _, pool in rt.queue.due_for_dispatch()}
    assert set(due.values()) == {"slow"}
    workspaces.update_workspace(rt.db, ws, pool=None, priority=0)
    assert {(j.priority, j.pool) for j in jobs_of(rt, ws)} == {(5, None)}
    for bad in (
        {"pool": "no spaces"},
        {"pool": "x" * 41},
        {"priority": 101},
        {"retention": {"originals_days": -1}},
    ):
        with pytest.raises(InvalidInput):
            workspaces.update_workspace(rt.db, ws, **bad)
    assert workspaces.get_workspace(rt.db, ws)["pool"] is None  # nothing half-applied
