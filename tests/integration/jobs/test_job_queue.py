"""The job table's semantics on a real SQLite file: claim, lease, fencing, reaping, retries, executor.

Every test drives the real ``JobQueue`` / ``EmbeddedExecutor`` against the ``runtime`` fixture's
database (short leases: 4 s lease, 1 s heartbeat). Leases are expired by writing
``lease_expires_at`` in the past rather than by waiting; waits poll the database with a deadline.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conftest import make_settings
from lorebase.db.models import Job, KnowledgeBase, Pipeline, Workspace, utcnow
from lorebase.db.states import JOB_FINAL as FINAL_JOB_STATES
from lorebase.errors import LeaseLost, PermanentError, TransientError
from lorebase.jobs.context import JobContext
from lorebase.jobs.executor import EmbeddedExecutor
from lorebase.jobs.queue import ClaimedJob
from lorebase.jobs.retry import Backoff
from lorebase.runtime import Runtime
from lorebase.settings import JobSettings
from support.waiting import wait_for

WS = "ws-test"
T = TypeVar("T")


# -- helpers -------------------------------------------------------------------------------------
def enqueue(rt: Runtime, **kw: Any) -> str | None:
    kw.setdefault("type", "t")
    kw.setdefault("workspace_id", WS)
    with rt.db.session() as s:
        return rt.queue.enqueue(s, **kw)


def new_job(rt: Runtime, **kw: Any) -> str:
    """Enqueue a job without a dedupe key (always accepted); returns its id."""
    job_id = enqueue(rt, **kw)
    assert job_id is not None
    return job_id


def job_row(rt: Runtime, job_id: str) -> Job:
    with rt.db.read_session() as s:
        job = s.get(Job, job_id)
        assert job is not None, f"job {job_id} vanished"
        return job


def jobs_with_key(rt: Runtime, dedupe_key: str) -> list[tuple[str, str]]:
    with rt.db.read_session() as s:
        rows = s.execute(select(Job.id, Job.status).where(Job.dedupe_key == dedupe_key)).all()
    return [(r.id, r.status) for r in rows]


def set_job(rt: Runtime, job_id: str, **values: Any) -> None:
    with rt.db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def expire_lease(rt: Runtime, job_id: str) -> None:
    """Simulate a worker that stopped heartbeating: its lease ran out a second ago."""
    set_job(rt, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))


def make_pipeline(rt: Runtime, status: str = "running") -> tuple[str, str]:
    """A workspace + KB + pipeline through the ORM; returns (workspace_id, pipeline_id)."""
    with rt.db.session() as s:
        ws = Workspace(name=f"ws-{random.random()}")
        s.add(ws)
        s.flush()
        kb = KnowledgeBase(workspace_id=ws.id, name="kb")
        s.add(kb)
        s.flush()
        p = Pipeline(kb_id=kb.id, workspace_id=ws.id, status=status)
        s.add(p)
        s.flush()
        return ws.id, p.id


def set_pipeline_status(rt: Runtime, pipeline_id: str, status: str) -> None:
    with rt.db.session() as s:
        s.execute(update(Pipeline).where(Pipeline.id == pipeline_id).values(status=status))


def pipeline_status(rt: Runtime, pipeline_id: str) -> str:
    with rt.db.read_session() as s:
        return str(s.execute(select(Pipeline.status).where(Pipeline.id == pipeline_id)).scalar_one())


def wait_status(rt: Runtime, job_id: str, statuses: tuple[str, ...], timeout: float = 10.0) -> Job:
    def check() -> Job | None:
        job = job_row(rt, job_id)
        return job if job.status in statuses else None

    return wait_for(check, timeout, f"job {job_id} to reach {statuses}")


def claim(rt: Runtime, owner: str = "A", types: tuple[str, ...] | None = None) -> ClaimedJob:
    job = rt.queue.claim(owner, types)
    assert job is not None, "expected a claimable job"
    return job


# -- enqueue + claim -----------------------------------------------------------------------------
def test_claim_takes_lease_and_counts_the_attempt(runtime: Runtime) -> None:
    job_id = new_job(runtime, payload={"doc": "d1", "n": 3}, kb_id="kb1", document_id="d1")
    assert job_id is not None
    assert job_row(runtime, job_id).status == "pending"
    assert job_row(runtime, job_id).attempts == 0

    before = utcnow()
    job = claim(runtime, "owner-A")
    after = utcnow()

    assert job.id == job_id
    assert job.attempts == 1
    assert job.owner == "owner-A"
    assert job.payload == {"doc": "d1", "n": 3}
    assert (job.kb_id, job.document_id, job.workspace_id) == ("kb1", "d1", WS)
    assert job.max_attempts == runtime.settings.jobs.max_attempts
    row = job_row(runtime, job_id)
    assert row.status == "running"
    assert row.attempts == 1
    assert row.lease_owner == "owner-A"
    lease = timedelta(seconds=runtime.settings.jobs.lease_seconds)
    assert row.lease_expires_at is not None
    assert before + lease <= row.lease_expires_at <= after + lease
    assert row.heartbeat_at is not None and row.started_at is not None
    # nothing else is runnable
    assert runtime.queue.claim("owner-B") is None


def test_claim_order_is_priority_desc_then_run_at(runtime: Runtime) -> None:
    now = utcnow()
    low_oldest = new_job(runtime, priority=0, run_at=now - timedelta(minutes=30))
    high_newer = new_job(runtime, priority=5, run_at=now - timedelta(minutes=1))
    high_older = new_job(runtime, priority=5, run_at=now - timedelta(minutes=10))
    mid = new_job(runtime, priority=2, run_at=now - timedelta(minutes=5))

    order = [claim(runtime, f"w{i}").id for i in range(4)]

    assert order == [high_older, high_newer, mid, low_oldest]
    assert runtime.queue.claim("w9") is None


def test_job_scheduled_in_the_future_is_not_claimed(runtime: Runtime) -> None:
    future = new_job(runtime, run_at=utcnow() + timedelta(minutes=5), priority=100)
    assert runtime.queue.claim("A") is None
    now_job = new_job(runtime, priority=0)
    assert claim(runtime).id == now_job  # the future job's higher priority does not matter yet
    set_job(runtime, future, run_at=utcnow() - timedelta(seconds=1))
    assert claim(runtime, "B").id == future


def test_claim_only_takes_requested_types(runtime: Runtime) -> None:
    job_id = new_job(runtime, type="parse")
    assert runtime.queue.claim("A", ("embed",)) is None
    assert claim(runtime, "A", ("embed", "parse")).id == job_id


# -- dedupe ----------------------------------------------------------------------------------------
def test_second_enqueue_with_same_dedupe_key_while_pending_is_dropped(runtime: Runtime) -> None:
    first = enqueue(runtime, dedupe_key="embed:p1")
    second = enqueue(runtime, dedupe_key="embed:p1")
    other = enqueue(runtime, dedupe_key="embed:p2")

    assert first is not None
    assert second is None
    assert other is not None and other != first
    assert jobs_with_key(runtime, "embed:p1") == [(first, "pending")]


def test_dedupe_key_accepts_new_pending_job_once_first_is_running(runtime: Runtime) -> None:
    first = enqueue(runtime, dedupe_key="embed:p1")
    assert claim(runtime).id == first

    second = enqueue(runtime, dedupe_key="embed:p1")
    third = enqueue(runtime, dedupe_key="embed:p1")

    assert second is not None and second != first
    assert third is None  # one pending per key, still
    assert sorted(jobs_with_key(runtime, "embed:p1")) == sorted([(first, "running"), (second, "pending")])


def test_dedupe_key_is_free_again_after_job_finished(runtime: Runtime) -> None:
    first = enqueue(runtime, dedupe_key="k")
    job = claim(runtime)
    with runtime.db.session() as s:
        runtime.queue.succeed(s, job)
    again = enqueue(runtime, dedupe_key="k")
    assert again is not None and again != first


def test_dedupe_enqueue_is_part_of_callers_transaction(runtime: Runtime) -> None:
    with pytest.raises(RuntimeError), runtime.db.session() as s:
        assert runtime.queue.enqueue(s, type="t", workspace_id=WS, dedupe_key="k") is not None
        raise RuntimeError("roll back")
    assert jobs_with_key(runtime, "k") == []
    assert enqueue(runtime, dedupe_key="k") is not None


# -- concurrency key -------------------------------------------------------------------------------
def test_pending_job_is_not_claimable_while_its_concurrency_key_is_running(runtime: Runtime) -> None:
    first = new_job(runtime, concurrency_key="embed:p1", priority=1)
    second = new_job(runtime, concurrency_key="embed:p1", priority=1)
    unrelated = new_job(runtime, concurrency_key="embed:p2")

    a = claim(runtime, "A")
    assert a.id == first
    b = claim(runtime, "B")
    assert b.id == unrelated  # the other key is not blocked
    assert runtime.queue.claim("C") is None  # `second` waits for `first`

    with runtime.db.session() as s:
        runtime.queue.succeed(s, a)
    assert claim(runtime, "C").id == second


# -- fencing ---------------------------------------------------------------------------------------
def test_worker_whose_lease_was_taken_over_cannot_write(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    a = claim(runtime, "A")
    expire_lease(runtime, job_id)
    runtime.queue.reap()
    b = claim(runtime, "B")
    assert (b.id, b.attempts) == (job_id, 2)

    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.fence(s, a)
    assert runtime.queue.heartbeat(a) is False
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.succeed(s, a)
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.fail(s, a, "late failure")
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.retry_later(s, a, "late retry")
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.release(s, a)
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.cancel_running(s, a)
    with runtime.db.session() as s:
        runtime.queue.save_checkpoint(s, a, {"from": "A"})  # a silent no-op for the stale owner

    row = job_row(runtime, job_id)
    assert (row.status, row.attempts, row.lease_owner, row.checkpoint) == ("running", 2, "B", {})

    assert runtime.queue.heartbeat(b) is True
    with runtime.db.session() as s:
        runtime.queue.save_checkpoint(s, b, {"from": "B"})
        runtime.queue.succeed(s, b)
    row = job_row(runtime, job_id)
    assert (row.status, row.attempts, row.checkpoint) == ("succeeded", 2, {"from": "B"})
    assert row.lease_owner is None and row.finished_at is not None


def test_stale_transaction_of_taken_over_worker_rolls_back_its_writes(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    a = claim(runtime, "A")
    expire_lease(runtime, job_id)
    runtime.queue.reap()
    claim(runtime, "B")
    ctx = JobContext(runtime, a)

    with pytest.raises(LeaseLost), ctx.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(last_error="written by A"))  # never reached

    # a write done *before* the fence in the same transaction is rolled back with it
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(last_error="written by A"))
        runtime.queue.fence(s, a)
    assert job_row(runtime, job_id).last_error != "written by A"


def test_same_owner_name_reclaiming_is_fenced_by_attempts(runtime: Runtime) -> None:
    """A restarted worker with the same name must not be able to finish its predecessor's attempt."""
    job_id = new_job(runtime)
    old = claim(runtime, "host:1:worker-0")
    expire_lease(runtime, job_id)
    runtime.queue.reap()
    new = claim(runtime, "host:1:worker-0")
    assert new.attempts == old.attempts + 1
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.succeed(s, old)
    assert job_row(runtime, job_id).status == "running"


def test_cancelled_job_cannot_heartbeat_or_finish(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    job = claim(runtime)
    with runtime.db.session() as s:
        runtime.queue.cancel_running(s, job, "user cancelled")
    row = job_row(runtime, job_id)
    assert (row.status, row.last_error, row.lease_owner) == ("cancelled", "user cancelled", None)
    assert runtime.queue.heartbeat(job) is False
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.succeed(s, job)


# -- reaper ----------------------------------------------------------------------------------------
def test_reaper_returns_expired_running_job_to_pending_keeping_attempts(runtime: Runtime) -> None:
    ws, pipeline_id = make_pipeline(runtime)
    job_id = new_job(runtime, workspace_id=ws, pipeline_id=pipeline_id)
    claim(runtime)
    assert runtime.queue.reap() == []  # a live lease is left alone
    assert job_row(runtime, job_id).status == "running"

    expire_lease(runtime, job_id)
    touched = runtime.queue.reap()

    assert touched == [pipeline_id]
    row = job_row(runtime, job_id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.lease_owner is None and row.lease_expires_at is None
    assert row.last_error is not None and "lease expired" in row.last_error
    assert row.error_kind == "transient"
    again = claim(runtime, "B")  # immediately claimable
    assert (again.id, again.attempts) == (job_id, 2)


def test_reaper_kills_expired_job_that_spent_max_attempts(runtime: Runtime) -> None:
    job_id = new_job(runtime, max_attempts=2)
    claim(runtime, "A")
    expire_lease(runtime, job_id)
    runtime.queue.reap()
    claim(runtime, "B")
    expire_lease(runtime, job_id)
    runtime.queue.reap()

    row = job_row(runtime, job_id)
    assert (row.status, row.attempts) == ("dead", 2)
    assert row.last_error is not None and "lease expired" in row.last_error
    assert row.finished_at is not None
    assert runtime.queue.claim("C") is None


def test_job_whose_lease_is_renewed_by_heartbeats_is_never_reaped(runtime: Runtime) -> None:
    cfg = runtime.settings.jobs
    job_id = new_job(runtime)
    job = claim(runtime)
    first_expiry = job_row(runtime, job_id).lease_expires_at
    assert first_expiry is not None

    started = time.monotonic()
    while time.monotonic() - started < cfg.lease_seconds + 2:  # well past the original lease
        time.sleep(cfg.heartbeat_seconds)
        assert runtime.queue.heartbeat(job) is True
        assert runtime.queue.reap() == []
        assert job_row(runtime, job_id).status == "running"

    row = job_row(runtime, job_id)
    assert utcnow() > first_expiry  # the original lease is long gone ...
    assert row.lease_expires_at is not None and row.lease_expires_at > utcnow()  # ... renewed
    assert (row.status, row.attempts, row.lease_owner) == ("running", 1, "A")
    with runtime.db.session() as s:
        runtime.queue.succeed(s, job)
    assert job_row(runtime, job_id).status == "succeeded"


# -- retry_later / backoff -------------------------------------------------------------------------
def _ceiling(attempts: int, cfg: JobSettings) -> float:
    return min(cfg.backoff_max_seconds, cfg.backoff_base_seconds * 2 ** max(0, attempts - 1))


def test_retry_later_reschedules_with_backoff_within_bounds(runtime: Runtime) -> None:
    cfg = runtime.settings.jobs
    job_id = new_job(runtime)
    job = claim(runtime)
    before = utcnow()
    with runtime.db.session() as s:
        outcome, delay = runtime.queue.retry_later(s, job, "HTTP 503")

    assert outcome == "pending"
    ceiling = _ceiling(job.attempts, cfg)
    assert ceiling / 2 <= delay <= ceiling
    row = job_row(runtime, job_id)
    assert (row.status, row.attempts, row.last_error, row.error_kind) == (
        "pending",
        1,
        "HTTP 503",
        "transient",
    )
    assert row.lease_owner is None and row.lease_expires_at is None
    assert row.run_at > before
    assert abs((row.run_at - before).total_seconds() - delay) < 0.5
    assert runtime.queue.claim("B") is None  # not before its time
    wait_for(lambda: runtime.queue.claim("B"), timeout=ceiling + 2, what="the retry to become due")


def test_retry_later_marks_job_dead_after_max_attempts(runtime: Runtime) -> None:
    job_id = new_job(runtime, max_attempts=2)
    job = claim(runtime)
    with runtime.db.session() as s:
        assert runtime.queue.retry_later(s, job, "timeout 1")[0] == "pending"
    set_job(runtime, job_id, run_at=utcnow() - timedelta(seconds=1))
    job = claim(runtime)
    assert job.attempts == 2
    with runtime.db.session() as s:
        assert runtime.queue.retry_later(s, job, "timeout 2") == ("dead", 0.0)

    row = job_row(runtime, job_id)
    assert (row.status, row.attempts, row.last_error, row.error_kind) == ("dead", 2, "timeout 2", "transient")
    assert row.finished_at is not None and row.lease_owner is None
    assert runtime.queue.claim("C") is None


def test_retry_after_longer_than_backoff_wins_but_is_capped(runtime: Runtime) -> None:
    cfg = runtime.settings.jobs
    assert _ceiling(1, cfg) < 1.5 < cfg.backoff_max_seconds
    for retry_after, expected in ((1.5, 1.5), (3600.0, cfg.backoff_max_seconds)):
        new_job(runtime)
        job = claim(runtime)
        with runtime.db.session() as s:
            outcome, delay = runtime.queue.retry_later(s, job, "429", retry_after=retry_after)
        assert outcome == "pending"
        assert delay == pytest.approx(expected)
    # a Retry-After shorter than the backoff does not shorten it
    for _ in range(50):
        assert Backoff.of(cfg).delay(3, retry_after=0.0) >= _ceiling(3, cfg) / 2


def test_backoff_delay_grows_exponentially_within_jittered_bounds() -> None:
    cfg = JobSettings(backoff_base_seconds=0.5, backoff_max_seconds=300.0)
    rng_state = random.getstate()
    random.seed(20240611)
    try:
        means: list[float] = []
        for attempts in range(0, 16):
            ceiling = _ceiling(attempts, cfg)
            samples = [Backoff.of(cfg).delay(attempts) for _ in range(200)]
            assert all(ceiling / 2 <= d <= ceiling for d in samples), (attempts, min(samples), max(samples))
            assert max(samples) - min(samples) > 0  # jittered, not a constant
            means.append(sum(samples) / len(samples))
        for n in range(1, 15):
            if _ceiling(n + 1, cfg) < cfg.backoff_max_seconds:
                assert 1.7 < means[n + 1] / means[n] < 2.3, n  # doubles per attempt
            else:
                assert means[n + 1] <= cfg.backoff_max_seconds
        assert _ceiling(15, cfg) == cfg.backoff_max_seconds  # the cap was reached
    finally:
        random.setstate(rng_state)


# -- release ---------------------------------------------------------------------------------------
def test_release_gives_job_back_without_counting_the_attempt(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    job = claim(runtime)
    assert job.attempts == 1
    with runtime.db.session() as s:
        runtime.queue.release(s, job)

    row = job_row(runtime, job_id)
    assert (row.status, row.attempts, row.lease_owner, row.lease_expires_at) == ("pending", 0, None, None)
    assert row.last_error is None
    again = claim(runtime, "B")  # claimable right away, as attempt 1 again
    assert (again.id, again.attempts) == (job_id, 1)
    assert runtime.queue.heartbeat(job) is False  # the released claim is dead


# -- the attempt rule (jobs/retry.py) ---------------------------------------------------------------
def save_progress(rt: Runtime, job: ClaimedJob) -> None:
    """What an embed batch or a crawl commit does: a fenced transaction that saves progress."""
    with rt.db.session() as s:
        rt.queue.fence(s, job, progress=True)


def test_a_lost_attempt_that_saved_progress_is_given_back_even_at_the_last_attempt(runtime: Runtime) -> None:
    job_id = new_job(runtime, max_attempts=1)
    for owner in ("A", "B", "C"):  # three lost workers in a row, each having moved the job on
        job = claim(runtime, owner)
        assert job.attempts == 1
        save_progress(runtime, job)
        expire_lease(runtime, job_id)
        runtime.queue.reap()
        row = job_row(runtime, job_id)
        assert (row.status, row.attempts, row.progressed) == ("pending", 0, True), owner
        assert row.last_error is not None and "lease expired" in row.last_error
    assert job_row(runtime, job_id).claims == 3  # the fencing token kept counting
    job = claim(runtime, "D")
    assert job_row(runtime, job_id).progressed is False  # reset by the claim
    expire_lease(runtime, job_id)  # lost once more, without progress this time: it counts
    runtime.queue.reap()
    assert (job_row(runtime, job_id).status, job_row(runtime, job_id).attempts) == ("dead", 1)


def test_progress_starts_the_count_afresh_so_only_attempts_in_a_row_that_moved_nothing_kill(
    runtime: Runtime,
) -> None:
    job_id = new_job(runtime, max_attempts=2)

    def lose(owner: str, *, progress: bool) -> Job:
        job = claim(runtime, owner)
        if progress:
            save_progress(runtime, job)
        expire_lease(runtime, job_id)
        runtime.queue.reap()
        return job_row(runtime, job_id)

    assert (lose("A", progress=False).attempts, job_row(runtime, job_id).status) == (1, "pending")
    assert lose("B", progress=True).attempts == 0  # moved on: the earlier loss is forgiven too
    assert (lose("C", progress=False).status, job_row(runtime, job_id).attempts) == ("pending", 1)
    row = lose("D", progress=False)  # two in a row that moved nothing
    assert (row.status, row.attempts, row.claims) == ("dead", 2, 4)


def test_a_claim_after_progress_still_fences_out_the_lost_one(runtime: Runtime) -> None:
    """attempts goes back down when an attempt saved progress; the fence is on claims, so the
    lost worker cannot write into the next attempt with the same attempt number."""
    job_id = new_job(runtime)
    old = claim(runtime, "host:1:worker-0")
    save_progress(runtime, old)
    expire_lease(runtime, job_id)
    runtime.queue.reap()
    new = claim(runtime, "host:1:worker-0")
    assert new.attempts == old.attempts == 1  # started afresh, then counted again: the same number
    with pytest.raises(LeaseLost), runtime.db.session() as s:
        runtime.queue.succeed(s, old)
    with runtime.db.session() as s:
        runtime.queue.succeed(s, new)
    assert job_row(runtime, job_id).status == "succeeded"


def test_a_transient_error_after_progress_does_not_count(tmp_path: Path) -> None:
    # a backoff of seconds, not the suite's 0.1-0.2 s: on a loaded machine the claim below could
    # come after that and find the job runnable again
    runtime = Runtime(
        make_settings(tmp_path / "data", jobs={"backoff_base_seconds": 5.0, "backoff_max_seconds": 10.0})
    )
    try:
        job_id = new_job(runtime, max_attempts=1)
        job = claim(runtime)
        save_progress(runtime, job)
        with runtime.db.session() as s:
            outcome, delay = runtime.queue.retry_later(s, job, "HTTP 503")
        row = job_row(runtime, job_id)
        assert (outcome, row.status, row.attempts) == ("pending", "pending", 0)
        assert 0 < delay <= runtime.settings.jobs.backoff_max_seconds
        assert runtime.queue.claim("B") is None  # not before its backoff
    finally:
        runtime.close()


def test_an_unchanged_checkpoint_is_not_progress_and_a_changed_one_is(runtime: Runtime) -> None:
    job_id = new_job(runtime, max_attempts=3)
    job = claim(runtime)
    with runtime.db.session() as s:
        runtime.queue.save_checkpoint(s, job, {})  # the same as the claimed checkpoint
    assert job_row(runtime, job_id).progressed is False
    with runtime.db.session() as s:
        runtime.queue.save_checkpoint(s, job, {"next": "page-2"})
    assert job_row(runtime, job_id).progressed is True


def test_the_reaper_hands_a_dead_job_to_on_dead_in_its_own_transaction(runtime: Runtime) -> None:
    ws, pipeline_id = make_pipeline(runtime)
    job_id = new_job(runtime, workspace_id=ws, pipeline_id=pipeline_id, max_attempts=1, payload={"n": 1})
    claim(runtime)
    expire_lease(runtime, job_id)
    seen: list[tuple[str, dict[str, Any], str]] = []

    def broken(s: Session, job: ClaimedJob, message: str) -> None:
        seen.append((job.id, job.payload, message))
        s.execute(update(Pipeline).where(Pipeline.id == pipeline_id).values(error=message))
        raise RuntimeError("the hook failed")

    with pytest.raises(RuntimeError):
        runtime.queue.reap(on_dead=broken)
    assert job_row(runtime, job_id).status == "running"  # all or nothing: rolled back together
    assert seen == [(job_id, {"n": 1}, "worker lost (lease expired)")]

    def hook(s: Session, job: ClaimedJob, message: str) -> None:
        s.execute(update(Pipeline).where(Pipeline.id == pipeline_id).values(error=message))

    assert runtime.queue.reap(on_dead=hook) == [pipeline_id]
    assert job_row(runtime, job_id).status == "dead"
    with runtime.db.read_session() as s:
        assert s.get(Pipeline, pipeline_id).error == "worker lost (lease expired)"  # type: ignore[union-attr]


def test_a_superseded_job_is_never_dead_lettered(runtime: Runtime) -> None:
    """Out of attempts, but a pending twin will do the same work: superseded, not dead (its
    task's on_failure would fail the documents the twin is about to finish)."""
    job, duplicate = _running_job_with_pending_duplicate(runtime)
    set_job(runtime, job.id, max_attempts=1)
    expire_lease(runtime, job.id)
    called: list[str] = []
    runtime.queue.reap(on_dead=lambda s, j, m: called.append(j.id))
    row = job_row(runtime, job.id)
    assert (row.status, called) == ("cancelled", [])
    assert row.last_error == f"worker lost (lease expired); superseded by job {duplicate}"


# -- held pipelines --------------------------------------------------------------------------------
@pytest.mark.parametrize("held", ["paused", "cancelling", "cancelled"])
def test_jobs_of_held_pipeline_are_not_claimed(runtime: Runtime, held: str) -> None:
    ws, pipeline_id = make_pipeline(runtime, status=held)
    job_id = new_job(runtime, workspace_id=ws, pipeline_id=pipeline_id, priority=10)
    free = new_job(runtime)

    assert claim(runtime).id == free  # the held job's priority does not matter
    assert runtime.queue.claim("B") is None

    set_pipeline_status(runtime, pipeline_id, "running")
    assert claim(runtime, "C").id == job_id


def test_claim_starts_a_queued_pipeline(runtime: Runtime) -> None:
    ws, pipeline_id = make_pipeline(runtime, status="queued")
    new_job(runtime, workspace_id=ws, pipeline_id=pipeline_id)
    job = claim(runtime)
    assert job.pipeline_id == pipeline_id
    assert pipeline_status(runtime, pipeline_id) == "running"


# -- dedupe vs. going back to pending -------------------------------------------------------------
# The unique index allows one *pending* job per dedupe_key, and enqueue accepts a new pending job
# while the first runs (process.py does exactly that for `embed:<pipeline>`). A transition that
# would put the running job back to `pending` must not violate the index (it used to raise
# IntegrityError, which also blocked the whole reaper): the pending twin does the work instead.
def _running_job_with_pending_duplicate(rt: Runtime) -> tuple[ClaimedJob, str]:
    running_id = enqueue(rt, dedupe_key="embed:p1", concurrency_key="embed:p1")
    job = claim(rt)
    assert job.id == running_id
    duplicate = enqueue(rt, dedupe_key="embed:p1", concurrency_key="embed:p1")
    assert duplicate is not None
    return job, duplicate


def _assert_twin_takes_over(rt: Runtime, job_id: str, duplicate: str) -> None:
    row = job_row(rt, job_id)
    assert row.status in FINAL_JOB_STATES, row.status  # closed, neither running nor a 2nd pending
    assert row.lease_owner is None
    assert [status for _, status in jobs_with_key(rt, "embed:p1") if status == "pending"] == ["pending"]
    assert job_row(rt, duplicate).status == "pending"


def test_reaper_handles_expired_job_whose_dedupe_key_has_a_newer_pending_job(runtime: Runtime) -> None:
    job, duplicate = _running_job_with_pending_duplicate(runtime)
    other_id = new_job(runtime)
    claim(runtime, "B")
    expire_lease(runtime, job.id)
    expire_lease(runtime, other_id)

    runtime.queue.reap()

    assert job_row(runtime, other_id).status == "pending"  # unrelated jobs are still reaped
    _assert_twin_takes_over(runtime, job.id, duplicate)


def test_release_of_job_whose_dedupe_key_has_a_newer_pending_job(runtime: Runtime) -> None:
    job, duplicate = _running_job_with_pending_duplicate(runtime)
    with runtime.db.session() as s:
        runtime.queue.release(s, job)
    _assert_twin_takes_over(runtime, job.id, duplicate)


def test_retry_later_of_job_whose_dedupe_key_has_a_newer_pending_job(runtime: Runtime) -> None:
    job, duplicate = _running_job_with_pending_duplicate(runtime)
    with runtime.db.session() as s:
        outcome, _ = runtime.queue.retry_later(s, job, "HTTP 503")
    assert outcome != "pending"
    _assert_twin_takes_over(runtime, job.id, duplicate)


# -- EmbeddedExecutor ------------------------------------------------------------------------------
class CountingHandler:
    """Base for the test handlers: counts runs and failure callbacks, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs = 0
        self.failures: list[tuple[str, str, str]] = []
        self.started = threading.Event()

    @property
    def runs(self) -> int:
        with self._lock:
            return self._runs

    def _count(self) -> int:
        with self._lock:
            self._runs += 1
            return self._runs

    def run(self, ctx: JobContext) -> None:
        n = self._count()
        self.started.set()
        self.work(ctx, n)

    def work(self, ctx: JobContext, n: int) -> None:
        pass

    def on_failure(self, ctx: JobContext, session: Session, message: str, kind: str) -> None:
        with self._lock:
            self.failures.append((ctx.job.id, message, kind))


class FlakyTwice(CountingHandler):
    def work(self, ctx: JobContext, n: int) -> None:
        if n <= 2:
            raise TransientError(f"flaky run {n}")


class Corrupt(CountingHandler):
    def work(self, ctx: JobContext, n: int) -> None:
        raise PermanentError("corrupt file: not a PDF")


class AlwaysTransient(CountingHandler):
    def work(self, ctx: JobContext, n: int) -> None:
        raise TransientError(f"HTTP 503 on run {n}")


class Crashing(CountingHandler):
    def work(self, ctx: JobContext, n: int) -> None:
        raise ValueError("unexpected")


class Slow(CountingHandler):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def work(self, ctx: JobContext, n: int) -> None:
        time.sleep(self.seconds)  # no control checks: only the heartbeat thread keeps the lease


class Looping(CountingHandler):
    """Works in small batches, resumable from what it saved (like the embed loop), and checks
    for pause/cancel/drain between them."""

    def work(self, ctx: JobContext, n: int) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ctx.check_control(resumable=True)
            time.sleep(0.05)
        raise AssertionError("never interrupted")


class Finite(CountingHandler):
    """A short job without checkpoints: checks control (not resumable) and ends by itself."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def work(self, ctx: JobContext, n: int) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            ctx.check_control()
            time.sleep(0.05)


@pytest.fixture
def executors() -> Iterator[list[EmbeddedExecutor]]:
    """Executors created by a test; all drained and stopped at teardown, before the DB closes."""
    made: list[EmbeddedExecutor] = []
    yield made
    for ex in made:
        ex.stop(drain=True, timeout=10)


def start(
    rt: Runtime, executors: list[EmbeddedExecutor], handler: Any, concurrency: int = 1
) -> EmbeddedExecutor:
    ex = EmbeddedExecutor(rt, {"t": handler}, concurrency=concurrency)
    executors.append(ex)
    ex.start()
    return ex


def test_executor_retries_transient_errors_then_succeeds(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    handler = FlakyTwice()
    job_id = new_job(runtime)
    start(runtime, executors, handler)

    row = wait_status(runtime, job_id, ("succeeded", "failed", "dead"))

    assert (row.status, row.attempts) == ("succeeded", 3)
    assert row.last_error is None and row.lease_owner is None
    assert handler.runs == 3
    assert handler.failures == []


def test_executor_fails_permanent_error_at_once(runtime: Runtime, executors: list[EmbeddedExecutor]) -> None:
    handler = Corrupt()
    job_id = new_job(runtime)
    ex = EmbeddedExecutor(runtime, {"t": handler}, concurrency=1)
    ex.run_until_idle(timeout=10)

    row = job_row(runtime, job_id)
    assert (row.status, row.attempts, row.error_kind) == ("failed", 1, "permanent")
    assert row.last_error == "corrupt file: not a PDF"
    assert handler.runs == 1
    assert handler.failures == [(job_id, "corrupt file: not a PDF", "permanent")]


def test_executor_kills_job_after_max_attempts_of_transient_errors(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    max_attempts = runtime.settings.jobs.max_attempts
    handler = AlwaysTransient()
    job_id = new_job(runtime)
    start(runtime, executors, handler)

    row = wait_status(runtime, job_id, ("succeeded", "failed", "dead"))

    assert (row.status, row.attempts, row.error_kind) == ("dead", max_attempts, "transient")
    assert row.last_error == f"HTTP 503 on run {max_attempts}"
    assert handler.runs == max_attempts
    wait_for(lambda: handler.failures, timeout=5, what="on_failure")
    assert handler.failures == [(job_id, f"HTTP 503 on run {max_attempts}", "transient")]


def test_executor_treats_unexpected_exceptions_as_transient(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    handler = Crashing()
    job_id = new_job(runtime, max_attempts=2)
    start(runtime, executors, handler)

    row = wait_status(runtime, job_id, ("succeeded", "failed", "dead"))

    assert (row.status, row.attempts) == ("dead", 2)
    assert row.last_error == "ValueError: unexpected"
    assert handler.runs == 2
    wait_for(lambda: handler.failures, timeout=5, what="on_failure")
    assert [kind for _, _, kind in handler.failures] == ["transient"]


@pytest.fixture
def short_lease_runtime(tmp_path: Path) -> Iterator[Runtime]:
    """Like ``runtime`` but with a 1.5 s lease, so outliving 3 leases fits in a few seconds."""
    jobs = {"lease_seconds": 1.5, "heartbeat_seconds": 0.3, "poll_seconds": 0.05, "reap_seconds": 0.2}
    rt = Runtime(make_settings(tmp_path / "short-lease", jobs=jobs))
    yield rt
    rt.close()


def test_executor_heartbeat_keeps_long_job_alive_past_three_leases(
    short_lease_runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    rt = short_lease_runtime
    lease = rt.settings.jobs.lease_seconds
    handler = Slow(seconds=3 * lease + 0.5)
    job_id = new_job(rt)
    # two workers: if the lease were lost, the idle one would claim the job and run it again
    start(rt, executors, handler, concurrency=2)
    assert handler.started.wait(5)

    def finished() -> Job | None:
        assert rt.queue.reap() == []  # an extra, eager reaper: it must find nothing to take
        row = job_row(rt, job_id)
        return row if row.status != "running" else None

    row = wait_for(finished, timeout=3 * lease + 5, what="the slow job to finish")

    assert (row.status, row.attempts) == ("succeeded", 1)
    time.sleep(0.3)  # give a (wrong) second claim a moment to show up
    assert handler.runs == 1
    assert job_row(rt, job_id).status == "succeeded"


def test_executor_drain_releases_running_job_without_counting_attempt(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    handler = Looping()
    job_id = new_job(runtime)
    attempts_before = job_row(runtime, job_id).attempts
    ex = start(runtime, executors, handler)
    assert handler.started.wait(5)
    assert job_row(runtime, job_id).status == "running"

    t0 = time.monotonic()
    ex.stop(drain=True, timeout=10)
    assert time.monotonic() - t0 < 5

    row = job_row(runtime, job_id)
    assert (row.status, row.attempts) == ("pending", attempts_before)
    assert row.lease_owner is None and row.lease_expires_at is None
    assert handler.runs == 1
    assert handler.failures == []


def test_executor_drain_with_pending_duplicate_leaves_one_pending_job(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    handler = Looping()
    first = enqueue(runtime, dedupe_key="embed:p1", concurrency_key="embed:p1")
    assert first is not None
    ex = start(runtime, executors, handler)
    assert handler.started.wait(5)
    duplicate = enqueue(runtime, dedupe_key="embed:p1", concurrency_key="embed:p1")
    assert duplicate is not None

    ex.stop(drain=True, timeout=10)

    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith(ex.owner_prefix))
    _assert_twin_takes_over(runtime, first, duplicate)


def test_executor_drain_lets_a_job_without_checkpoints_finish(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    handler = Finite(seconds=1.0)
    job_id = new_job(runtime)
    ex = start(runtime, executors, handler)
    assert handler.started.wait(5)
    ex.stop(drain=True, timeout=10)
    assert job_row(runtime, job_id).status == "succeeded"
    assert handler.runs == 1


def test_executor_pause_releases_job_and_resume_runs_it_again(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    ws, pipeline_id = make_pipeline(runtime, status="running")
    handler = Looping()
    job_id = new_job(runtime, workspace_id=ws, pipeline_id=pipeline_id)
    start(runtime, executors, handler)
    assert handler.started.wait(5)

    set_pipeline_status(runtime, pipeline_id, "paused")
    row = wait_status(runtime, job_id, ("pending",))
    assert row.attempts == 0
    time.sleep(0.5)  # a paused pipeline's job stays put
    assert job_row(runtime, job_id).status == "pending"
    assert handler.runs == 1

    set_pipeline_status(runtime, pipeline_id, "running")
    wait_for(lambda: handler.runs == 2, timeout=5, what="the resumed job to run again")
    assert job_row(runtime, job_id).attempts == 1


def test_executor_cancel_ends_running_job_cancelled(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    ws, pipeline_id = make_pipeline(runtime, status="running")
    handler = Looping()
    job_id = new_job(runtime, workspace_id=ws, pipeline_id=pipeline_id)
    start(runtime, executors, handler)
    assert handler.started.wait(5)

    set_pipeline_status(runtime, pipeline_id, "cancelling")
    row = wait_status(runtime, job_id, ("cancelled", "pending", "failed", "dead", "succeeded"))

    assert row.status == "cancelled"
    assert row.lease_owner is None
    assert handler.failures == []


class BrokenFailureHook(CountingHandler):
    def work(self, ctx: JobContext, n: int) -> None:
        if ctx.job.payload.get("bad"):
            raise PermanentError("bad input")

    def on_failure(self, ctx: JobContext, session: Session, message: str, kind: str) -> None:
        raise RuntimeError("on_failure blew up")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_executor_worker_survives_a_failing_on_failure_hook(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    handler = BrokenFailureHook()
    new_job(runtime, payload={"bad": True})
    start(runtime, executors, handler)
    assert handler.started.wait(5)
    wait_for(lambda: handler.runs == 1, timeout=5, what="the bad job to run")

    good = new_job(runtime, payload={})
    runtime.queue.notify()

    wait_status(runtime, good, ("succeeded",), timeout=3)


def test_workspace_and_pipeline_shares_let_others_through(tmp_path: Path) -> None:
    """One tenant's bulk work cannot hold every worker: with a share of 1 running job per
    workspace, the next claim skips workspace A's (more urgent) backlog for B's job; with a
    share per pipeline, likewise for a second pipeline of the same workspace."""
    rt = Runtime(make_settings(tmp_path / "ws", jobs={"max_running_per_workspace": 1}))
    try:
        ws_a, _ = make_pipeline(rt)
        ws_b, _ = make_pipeline(rt)
        a_jobs = [new_job(rt, workspace_id=ws_a, priority=10) for _ in range(3)]
        b_job = new_job(rt, workspace_id=ws_b, priority=0)
        first = rt.queue.claim("w1")
        assert first is not None and first.id in a_jobs
        second = rt.queue.claim("w2")
        assert second is not None and second.id == b_job
        assert rt.queue.claim("w3") is None  # both workspaces are at their share
        with rt.db.session() as s:
            rt.queue.succeed(s, first)
        third = rt.queue.claim("w3")
        assert third is not None and third.id in a_jobs and third.id != first.id
    finally:
        rt.close()

    rt = Runtime(make_settings(tmp_path / "pipe", jobs={"max_running_per_pipeline": 1}))
    try:
        ws, p1 = make_pipeline(rt)
        with rt.db.session() as s:
            kb_id = s.get(Pipeline, p1).kb_id
            p2 = Pipeline(kb_id=kb_id, workspace_id=ws, status="running")
            s.add(p2)
            s.flush()
            p2_id = p2.id
        p1_jobs = [new_job(rt, workspace_id=ws, pipeline_id=p1, priority=10) for _ in range(3)]
        p2_job = new_job(rt, workspace_id=ws, pipeline_id=p2_id)
        first, second, third = (rt.queue.claim(f"w{i}") for i in range(3))
        assert first is not None and first.id in p1_jobs
        assert second is not None and second.id == p2_job
        assert third is None
    finally:
        rt.close()


def test_lane_runs_its_type_beside_the_general_threads(
    runtime: Runtime, executors: list[EmbeddedExecutor]
) -> None:
    """A job type with a lane of its own (crawls) never holds a general thread: with one general
    thread busy on a long lane job, other jobs still run, and the lane takes only its type."""
    long_jobs = Finite(3.0)
    quick = Finite(0.0)
    ex = EmbeddedExecutor(runtime, {"long": long_jobs, "t": quick}, concurrency=1, lanes={"long": 1})
    executors.append(ex)
    first_long = new_job(runtime, type="long")
    second_long = new_job(runtime, type="long")
    ex.start()
    wait_for(long_jobs.started.is_set, 5, "the first long job to start")
    quick_ids = [new_job(runtime) for _ in range(3)]
    ex._wake.set()

    for job_id in quick_ids:
        row = wait_status(runtime, job_id, FINAL_JOB_STATES, timeout=2.5)
        assert row.status == "succeeded"
        assert row.lease_owner is None
    # the lane runs one long job at a time, and the general thread never took the second one
    assert job_row(runtime, first_long).status == "running"
    assert job_row(runtime, second_long).status == "pending"
    assert quick.runs == 3
    assert wait_status(runtime, second_long, FINAL_JOB_STATES).status == "succeeded"
    assert long_jobs.runs == 2


def test_lanes_for_types_an_executor_does_not_handle_are_ignored(runtime: Runtime) -> None:
    ex = EmbeddedExecutor(runtime, {"t": Finite(0.0)}, concurrency=1, lanes={"crawl_source": 1, "t": 0})
    assert ex.lanes == {}
