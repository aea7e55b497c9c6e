"""The ``process_document`` task's retry behaviour around groups of small documents."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from lorebase.assembly import build_executor
from lorebase.db.models import Document, Job, utcnow
from lorebase.runtime import Runtime
from lorebase.services.settle import settle
from lorebase.tasks import process_document
from support.faults import records, start_pipeline


def test_a_group_whose_worker_was_lost_is_split_so_each_document_goes_alone(runtime: Runtime) -> None:
    """A worker that dies under a group (a document that kills it, an OOM): the group's next
    attempt hands each document a job of its own, so only a poison document would end dead."""
    _, pipeline_id = start_pipeline(runtime, records(3, words=20, skip=700), name="split")
    lost = runtime.queue.claim("lost-worker", (process_document.NAME,))
    assert lost is not None and len(process_document.document_ids(lost.payload)) == 3
    with runtime.db.session() as s:  # the worker died: its lease runs out
        s.execute(
            update(Job).where(Job.id == lost.id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    runtime.queue.reap()
    executor = build_executor(runtime, concurrency=0, name="test")
    again = runtime.queue.claim("next-worker", (process_document.NAME,))
    assert again is not None and (again.id, again.attempts) == (lost.id, 2)
    executor.run_job(again)
    with runtime.db.read_session() as s:
        jobs = s.execute(
            select(Job.id, Job.status, Job.document_id).where(Job.type == process_document.NAME)
        ).all()
        statuses = set(
            s.execute(select(Document.status).where(Document.pipeline_id == pipeline_id)).scalars()
        )
    assert [(status, doc) for job_id, status, doc in jobs if job_id == lost.id] == [("succeeded", None)]
    singles = [(status, doc) for job_id, status, doc in jobs if job_id != lost.id]
    assert len(singles) == 3 and {status for status, _ in singles} == {"pending"}
    assert len({doc for _, doc in singles}) == 3  # one job per document
    assert statuses == {"pending"}
    executor.run_until_idle(timeout=120)
    settle(runtime, pipeline_id)
    with runtime.db.read_session() as s:
        statuses = set(
            s.execute(select(Document.status).where(Document.pipeline_id == pipeline_id)).scalars()
        )
    assert statuses == {"indexed"}


def test_a_group_tried_for_the_first_time_is_not_split(runtime: Runtime) -> None:
    _, pipeline_id = start_pipeline(runtime, records(2, words=20, skip=720), name="whole")
    job = runtime.queue.claim("w", (process_document.NAME,))
    assert job is not None
    build_executor(runtime, concurrency=0, name="test").run_job(job)
    with runtime.db.read_session() as s:
        count = len(s.execute(select(Job.id).where(Job.type == process_document.NAME)).all())
        statuses = set(
            s.execute(select(Document.status).where(Document.pipeline_id == pipeline_id)).scalars()
        )
    assert count == 1 and statuses == {"embedding"}
