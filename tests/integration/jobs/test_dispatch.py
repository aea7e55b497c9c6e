"""The broker executors' side of the job table: which jobs get a message, and when again.

Runs on the test database (SQLite, or PostgreSQL with LOREBASE_TEST_DATABASE=postgres) with a
real ``Dispatcher`` whose sender records what it would publish; the Celery and RQ senders are
exercised by the multi-process tests (``test_scale_out``, ``make test-scale``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from test_job_queue import job_row, new_job

from conftest import make_settings
from lorebase.db.models import Job, utcnow
from lorebase.jobs.dispatch import Dispatcher, Due, queue_name
from lorebase.runtime import Runtime
from lorebase.tasks import REGISTRY


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "data", jobs={"redispatch_seconds": 30.0}))
    yield runtime
    runtime.close()


def test_a_due_job_is_dispatched_once_until_its_message_is_stale(rt: Runtime) -> None:
    job = new_job(rt, type="process_document")
    later = new_job(rt, run_at=utcnow() + timedelta(hours=1))
    assert rt.queue.due_for_dispatch() == [(job, "process_document", None)]
    assert rt.queue.due_for_dispatch() == []  # its message is out
    assert later not in {j for j, _, _ in rt.queue.due_for_dispatch()}
    with rt.db.session() as s:  # the message was sent 31 s ago and the job never started: lost
        s.execute(update(Job).where(Job.id == job).values(dispatched_at=utcnow() - timedelta(seconds=31)))
    assert rt.queue.due_for_dispatch() == [(job, "process_document", None)]


def test_a_claimed_job_cannot_be_claimed_by_id_again_and_a_retry_is_dispatched_anew(rt: Runtime) -> None:
    job = new_job(rt)
    assert rt.queue.due_for_dispatch()
    claimed = rt.queue.claim("A", job_id=job)
    assert claimed is not None and claimed.id == job
    assert rt.queue.claim("B", job_id=job) is None  # a duplicate message finds nothing
    with rt.db.session() as s:
        rt.queue.retry_later(s, claimed, "flaky")
    assert job_row(rt, job).dispatched_at is None  # a new message once its backoff has passed
    assert rt.queue.due_for_dispatch() == []  # not yet: run_at is in the future
    with rt.db.session() as s:
        s.execute(update(Job).where(Job.id == job).values(run_at=utcnow()))
    assert [j for j, _, _ in rt.queue.due_for_dispatch()] == [job]


def test_a_job_waiting_for_a_concurrency_key_is_dispatched_when_the_key_is_free(rt: Runtime) -> None:
    first = new_job(rt, concurrency_key="embed:p")
    second = new_job(rt, concurrency_key="embed:p")
    assert {j for j, _, _ in rt.queue.due_for_dispatch()} == {first, second}
    holder = rt.queue.claim("A", job_id=first)
    assert holder is not None
    assert rt.queue.claim("B", job_id=second) is None  # delivered while the key is held
    rt.queue.defer_dispatch(second, seconds=5)
    assert rt.queue.due_for_dispatch() == []  # deferred, not lost
    with rt.db.session() as s:
        rt.queue.succeed(s, holder)
    assert [j for j, _, _ in rt.queue.due_for_dispatch()] == [second]  # at once, not after 5 s
    assert rt.queue.claim("B", job_id=second) is not None


def test_a_send_that_fails_leaves_the_jobs_for_the_next_pass(rt: Runtime) -> None:
    sent: list[Sequence[Due]] = []
    broken = True

    def send(jobs: Sequence[Due]) -> None:
        if broken:
            raise ConnectionError("broker down")
        sent.append(list(jobs))

    dispatcher = Dispatcher(rt, send)
    job = new_job(rt)
    with pytest.raises(ConnectionError):
        dispatcher.dispatch_once()
    assert job_row(rt, job).dispatched_at is None and sent == []
    broken = False
    assert dispatcher.dispatch_once() == 1
    assert sent == [[(job, "t", None)]]


def test_the_dispatcher_thread_sends_what_this_process_enqueues(rt: Runtime) -> None:
    import threading

    got = threading.Event()
    sent: list[str] = []

    def send(jobs: Sequence[Due]) -> None:
        sent.extend(j for j, _, _ in jobs)
        got.set()

    dispatcher = Dispatcher(rt, send)
    dispatcher.start()
    try:
        job = new_job(rt)
        rt.queue.notify()
        assert got.wait(10)
        assert sent == [job]
    finally:
        dispatcher.stop()


def test_queue_kinds() -> None:
    assert REGISTRY.parse_kinds(None) == ("crawl", "process", "embed")
    assert REGISTRY.parse_kinds(" embed, crawl ") == ("embed", "crawl")
    assert queue_name("acme", "embed") == "acme.embed"
    assert queue_name("acme", "embed", "big") == "acme.embed.big"  # a worker pool's own queue
    with pytest.raises(ValueError, match="unknown queue kind"):
        REGISTRY.parse_kinds("crawl,parse")
