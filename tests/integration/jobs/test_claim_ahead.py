"""Claiming several jobs at once (``JobQueue.claim_many``) and the jobs claimed ahead.

A batch claim must take what claims one after another would take (claim order, one job per
concurrency key, within the pipeline and workspace shares); a job claimed ahead is leased but
counts its attempt only when it starts, so losing or releasing it costs it nothing. Real
database (SQLite, or PostgreSQL with ``LOREBASE_TEST_DATABASE=postgres``), no mocks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from conftest import make_settings
from lorebase.db.models import Job, KnowledgeBase, Pipeline, Workspace, utcnow
from lorebase.jobs.context import JobContext
from lorebase.jobs.executor import EmbeddedExecutor
from lorebase.runtime import Runtime
from support.waiting import wait_for

WS = "ws-test"


def new_job(rt: Runtime, **kw: Any) -> str:
    kw.setdefault("type", "t")
    kw.setdefault("workspace_id", WS)
    with rt.db.session() as s:
        job_id = rt.queue.enqueue(s, **kw)
    assert job_id is not None
    return job_id


def row(rt: Runtime, job_id: str) -> Job:
    with rt.db.read_session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def new_pipeline(rt: Runtime, workspace_id: str = WS) -> str:
    with rt.db.session() as s:
        if s.get(Workspace, workspace_id) is None:
            s.add(Workspace(id=workspace_id, name=f"ws {workspace_id}"))
            s.flush()
        kb = KnowledgeBase(workspace_id=workspace_id, name="kb")
        s.add(kb)
        s.flush()
        pipeline = Pipeline(kb_id=kb.id, workspace_id=workspace_id, status="running")
        s.add(pipeline)
        s.flush()
        return pipeline.id


def expire_leases(rt: Runtime) -> None:
    with rt.db.session() as s:
        s.execute(
            update(Job)
            .where(Job.status == "running")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


@pytest.fixture
def shares(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime whose claims keep 2 running jobs per pipeline and 3 per workspace."""
    rt = Runtime(
        make_settings(
            tmp_path / "shares", jobs={"max_running_per_pipeline": 2, "max_running_per_workspace": 3}
        )
    )
    yield rt
    rt.close()


# -- the batch ---------------------------------------------------------------------------------------
def test_a_batch_is_taken_in_claim_order_and_only_the_first_job_starts(runtime: Runtime) -> None:
    now = utcnow()
    low = new_job(runtime, priority=0, run_at=now - timedelta(minutes=30))
    high_newer = new_job(runtime, priority=5, run_at=now - timedelta(minutes=1))
    high_older = new_job(runtime, priority=5, run_at=now - timedelta(minutes=10))
    mid = new_job(runtime, priority=2, run_at=now - timedelta(minutes=5))

    jobs = runtime.queue.claim_many("A", limit=3)

    assert [j.id for j in jobs] == [high_older, high_newer, mid]
    assert [j.ahead for j in jobs] == [False, True, True]
    assert all(j.attempts == 1 and j.owner == "A" for j in jobs)  # the attempt each one is
    first, *ahead = (row(runtime, j.id) for j in jobs)
    assert (first.status, first.attempts, first.lease_owner) == ("running", 1, "A")
    assert first.heartbeat_at is not None
    for r in ahead:  # leased, not counted, not worked on
        assert (r.status, r.attempts, r.lease_owner, r.heartbeat_at) == ("running", 0, "A", None)
        assert r.lease_expires_at is not None and r.lease_expires_at > utcnow()
    assert row(runtime, low).status == "pending"


def test_a_batch_never_takes_two_jobs_of_one_concurrency_key(runtime: Runtime) -> None:
    """The batch stops at the first job claims one by one would pass over, so what it takes is
    in claim order; the next claim goes on from there."""
    k1_first = new_job(runtime, priority=5, concurrency_key="k1")
    k1_second = new_job(runtime, priority=4, concurrency_key="k1")
    free = new_job(runtime, priority=3)
    k2 = new_job(runtime, priority=2, concurrency_key="k2")
    held = new_job(runtime, priority=9, concurrency_key="k3")
    assert runtime.queue.claim("other", job_id=held) is not None  # k3 is held by a running job
    k3_waiting = new_job(runtime, priority=9, concurrency_key="k3")

    assert [j.id for j in runtime.queue.claim_many("A", limit=8)] == [k1_first]
    assert [j.id for j in runtime.queue.claim_many("B", limit=8)] == [free, k2]
    assert row(runtime, k1_second).status == "pending"
    assert row(runtime, k3_waiting).status == "pending"


def test_a_batch_stays_within_the_pipeline_share_counting_running_jobs(shares: Runtime) -> None:
    p = new_pipeline(shares)
    q = new_pipeline(shares)
    already = new_job(shares, pipeline_id=p, priority=9)
    assert shares.queue.claim("other", job_id=already) is not None  # one of p's two slots taken
    p_jobs = [new_job(shares, pipeline_id=p, priority=5) for _ in range(3)]
    q_job = new_job(shares, pipeline_id=q, priority=1)

    assert [j.id for j in shares.queue.claim_many("A", limit=8)] == [p_jobs[0]]  # p's second slot
    assert [j.id for j in shares.queue.claim_many("B", limit=8)] == [q_job]  # p is full
    assert [row(shares, j).status for j in p_jobs[1:]] == ["pending", "pending"]


def test_a_batch_stays_within_the_workspace_share(shares: Runtime) -> None:
    a_jobs = [new_job(shares, workspace_id="ws-a", priority=5) for _ in range(5)]
    b_job = new_job(shares, workspace_id="ws-b", priority=0)

    assert [j.id for j in shares.queue.claim_many("A", limit=8)] == a_jobs[:3]
    assert [j.id for j in shares.queue.claim_many("B", limit=8)] == [b_job]
    assert shares.queue.claim_many("C", limit=8) == []
    assert all(row(shares, j).status == "pending" for j in a_jobs[3:])


def test_one_claim_takes_at_most_one_job(runtime: Runtime) -> None:
    ids = {new_job(runtime) for _ in range(3)}
    job = runtime.queue.claim("A")
    assert job is not None and job.id in ids and not job.ahead
    assert sum(row(runtime, j).status == "running" for j in ids) == 1


# -- jobs claimed ahead ------------------------------------------------------------------------------
def test_a_job_claimed_ahead_counts_its_attempt_when_it_starts(runtime: Runtime) -> None:
    new_job(runtime, priority=1)
    second = new_job(runtime)
    _, ahead = runtime.queue.claim_many("A", limit=2)
    assert ahead.id == second and ahead.ahead

    assert runtime.queue.start(ahead) is True

    r = row(runtime, second)
    assert (r.status, r.attempts, r.lease_owner) == ("running", 1, "A")
    assert r.heartbeat_at is not None and not ahead.ahead
    with runtime.db.connection() as conn:
        runtime.queue.succeed(conn, ahead)
    assert row(runtime, second).status == "succeeded"


def test_a_job_claimed_ahead_is_leased_by_heartbeats_without_being_counted(runtime: Runtime) -> None:
    new_job(runtime, priority=1)
    new_job(runtime)
    _, ahead = runtime.queue.claim_many("A", limit=2)
    before = row(runtime, ahead.id).lease_expires_at
    assert before is not None

    assert runtime.queue.heartbeat(ahead) is True

    r = row(runtime, ahead.id)
    assert r.lease_expires_at is not None and r.lease_expires_at >= before
    assert (r.attempts, r.heartbeat_at) == (0, None)


def test_losing_the_worker_costs_jobs_claimed_ahead_no_attempt(runtime: Runtime) -> None:
    """A poison job that kills its worker ends dead alone: the jobs claimed with it, never
    started, come back uncounted every time."""
    poison = new_job(runtime, priority=1, max_attempts=2)
    innocent = new_job(runtime, max_attempts=2)
    for _ in range(2):
        jobs = runtime.queue.claim_many("A", limit=2)
        assert [j.id for j in jobs] == [poison, innocent]
        expire_leases(runtime)  # the worker died running the first
        runtime.queue.reap()

    assert (row(runtime, poison).status, row(runtime, poison).attempts) == ("dead", 2)
    assert (row(runtime, innocent).status, row(runtime, innocent).attempts) == ("pending", 0)


def test_release_gives_a_job_claimed_ahead_back_uncounted(runtime: Runtime) -> None:
    new_job(runtime, priority=1)
    second = new_job(runtime)
    _, ahead = runtime.queue.claim_many("A", limit=2)

    with runtime.db.connection() as conn:
        runtime.queue.release(conn, ahead)

    r = row(runtime, second)
    assert (r.status, r.attempts, r.lease_owner, r.lease_expires_at) == ("pending", 0, None, None)


@pytest.mark.parametrize("held", ["paused", "cancelling"])
def test_a_job_claimed_ahead_does_not_start_once_its_pipeline_is_held(runtime: Runtime, held: str) -> None:
    p = new_pipeline(runtime)
    new_job(runtime, pipeline_id=p, priority=1)
    second = new_job(runtime, pipeline_id=p)
    _, ahead = runtime.queue.claim_many("A", limit=2)
    with runtime.db.session() as s:
        s.execute(update(Pipeline).where(Pipeline.id == p).values(status=held))

    assert runtime.queue.start(ahead) is False

    r = row(runtime, second)  # given back as a claim now would have left it: pending, uncounted
    assert (r.status, r.attempts, r.lease_owner) == ("pending", 0, None)


def test_a_job_claimed_ahead_whose_lease_was_lost_does_not_start(runtime: Runtime) -> None:
    new_job(runtime, priority=1)
    second = new_job(runtime)
    _, ahead = runtime.queue.claim_many("A", limit=2)
    expire_leases(runtime)
    runtime.queue.reap()
    taken = runtime.queue.claim("B", job_id=second)
    assert taken is not None

    assert runtime.queue.start(ahead) is False

    r = row(runtime, second)  # B's attempt is untouched
    assert (r.status, r.lease_owner, r.attempts, r.claims) == ("running", "B", 1, taken.claims)


# -- the executor -----------------------------------------------------------------------------------
class Gate:
    """Job handler: the first job returns at once (so the thread learns jobs are short and
    claims ahead), the second waits for ``open``."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.waiting = threading.Event()
        self.open = threading.Event()

    def run(self, ctx: JobContext[Any]) -> None:
        self.ran.append(ctx.job.id)
        if len(self.ran) == 2:
            self.waiting.set()
            assert self.open.wait(30)

    def on_failure(self, ctx: JobContext[Any], session: Session, message: str, kind: str) -> None:
        pass


def test_the_executor_leases_jobs_claimed_ahead_and_gives_them_back_when_it_stops(runtime: Runtime) -> None:
    """Jobs claimed ahead wait leased (past a whole lease: the heartbeat thread renews them, the
    reaper leaves them) and go back to pending, uncounted, when the executor stops."""
    ids = [new_job(runtime, priority=10 - i) for i in range(5)]
    gate = Gate()
    ex = EmbeddedExecutor(runtime, {"t": gate}, concurrency=1)
    ex.start()
    try:
        assert gate.waiting.wait(10)
        assert gate.ran == ids[:2]
        ahead = ids[2:]
        assert [(row(runtime, j).status, row(runtime, j).attempts) for j in ahead] == [("running", 0)] * 3
        lease = runtime.settings.jobs.lease_seconds
        first_expiry = row(runtime, ahead[0]).lease_expires_at
        assert first_expiry is not None
        wait_for(
            lambda: (
                (row(runtime, ahead[0]).lease_expires_at or first_expiry)
                > first_expiry + timedelta(seconds=1)
            ),
            lease,
            "a heartbeat to renew the lease of a job claimed ahead",
        )
        assert all(row(runtime, j).status == "running" for j in ahead)  # the reaper left them
        stopping = threading.Thread(target=ex.stop, kwargs={"drain": True, "timeout": 20})
        stopping.start()
        wait_for(ex._stop.is_set, 5, "the executor to stop claiming")
        gate.open.set()
        stopping.join(30)
    finally:
        gate.open.set()
        ex.stop(drain=True, timeout=10)

    assert gate.ran == ids[:2]
    assert [row(runtime, j).status for j in ids[:2]] == ["succeeded", "succeeded"]
    for j in ids[2:]:
        r = row(runtime, j)
        assert (r.status, r.attempts, r.lease_owner) == ("pending", 0, None)
