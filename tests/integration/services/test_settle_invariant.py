"""The settle invariant (``services/pipelines.py``), as a property over random interleavings.

A few documents, one ``process_document`` job each, and three workers that the generated
schedule drives one step at a time, on the real job table, the real handlers and the real
``settle``: a worker takes the most urgent job (when it holds none) and holds it, runs it to its end,
embeds one batch of an embed loop (a fenced transaction that saves progress), fails
transiently, is lost (its lease expires and the reaper runs, handing dead jobs to their task's
``on_failure``), or releases its job (a drain); and ``settle`` runs at any moment. Twins and supersedes come by themselves:
a process job that ends while an embed loop is held queues a pending twin of that loop.

After every settle: the pipeline has ended with every document final, or some job is still
active (work is never left uncovered). After the schedule, well-behaved workers run whatever
is left: the pipeline ends, every chunk of an indexed document is embedded, and a document
that is not indexed failed with the error of a job of its own that ended failed or dead.

Runs on SQLite in ``make test`` and on PostgreSQL in ``make test-postgres``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from conftest import make_settings
from lorebase.assembly import build_executor
from lorebase.db.models import Chunk, Document, Job, Pipeline, utcnow
from lorebase.jobs import retry
from lorebase.jobs.context import JobContext
from lorebase.jobs.executor import EmbeddedExecutor
from lorebase.jobs.queue import ClaimedJob
from lorebase.runtime import Runtime
from lorebase.services.settle import settle
from lorebase.tasks import REGISTRY, process_document
from support.faults import records, start_pipeline

WORKERS = ("w0", "w1", "w2")
DOCS = 4
FINAL_DOC = ("indexed", "failed", "skipped", "cancelled")
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["claim", "run", "batch", "transient", "lose", "release", "settle"]),
        st.sampled_from(WORKERS),
    ),
    min_size=8,
    max_size=40,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, EmbeddedExecutor]]:
    """One database for every example (each gets a pipeline of its own): two attempts per job,
    batches of one chunk, parsing in the job's thread (no parse processes to start)."""
    data_dir = tmp_path_factory.mktemp("settle") / "data"
    rt = Runtime(make_settings(data_dir, embed_batch_size=1, jobs={"max_attempts": 2, "parse_processes": 0}))
    executor = EmbeddedExecutor(rt, REGISTRY, concurrency=0, name="schedule")
    try:
        yield rt, executor
    finally:
        rt.close()


@pytest.fixture(autouse=True)
def _one_job_per_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_document, "GROUP_MAX_DOCUMENTS", 1)


class Schedule:
    """The workers of one example and what each holds."""

    def __init__(self, rt: Runtime, executor: EmbeddedExecutor, pipeline_id: str) -> None:
        self.rt, self.executor, self.pipeline_id = rt, executor, pipeline_id
        self.held: dict[str, ClaimedJob] = {}

    def step(self, action: str, worker: str) -> None:
        job = self.held.get(worker)
        if action == "settle":
            settle(self.rt, self.pipeline_id)
            self.check_settled()
            return
        if job is None:  # every other step starts by taking the most urgent job, if any
            job = self.rt.queue.claim(worker)
            if job is None:
                return
            self.held[worker] = job
        if action == "claim":
            return
        ctx = JobContext(self.rt, job)
        handler = REGISTRY.handler(job.type)
        if action == "batch" and hasattr(handler, "run_batch"):
            try:
                if handler.run_batch(ctx):
                    return
                self.executor.run_job(job)  # nothing left: the loop ends, succeeded
            except Exception as exc:  # lost its lease meanwhile, or the KB is gone: it ends here
                self.executor._ended(handler, ctx, retry.classify(exc))
        elif action in ("run", "batch"):
            self.executor.run_job(job)  # to its end, recorded as the executor records it
        elif action == "transient":
            self.executor._ended(handler, ctx, retry.Failure("transient", "HTTP 503 from somewhere"))
        elif action == "lose":
            with self.rt.db.session() as s:
                s.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.status == "running")
                    .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                )
            self.rt.queue.reap(on_dead=self.executor._dead_letter)
        elif action == "release":
            self.executor._ended(handler, ctx, retry.Failure("interrupted", "draining", reason="draining"))
        else:
            return
        del self.held[worker]

    def check_settled(self) -> None:
        """After a settle: ended with every document final, or some job active."""
        with self.rt.db.read_session() as s:
            status = s.execute(select(Pipeline.status).where(Pipeline.id == self.pipeline_id)).scalar_one()
            active = s.execute(
                select(func.count())
                .select_from(Job)
                .where(Job.pipeline_id == self.pipeline_id, Job.status.in_(("pending", "running")))
            ).scalar_one()
            open_docs = s.execute(
                select(func.count())
                .select_from(Document)
                .where(Document.pipeline_id == self.pipeline_id, Document.status.not_in(FINAL_DOC))
            ).scalar_one()
        if status in ("completed", "completed_with_errors", "failed"):
            assert open_docs == 0, f"ended {status} with {open_docs} documents mid-way"
        else:
            assert active > 0 or open_docs == 0, f"{open_docs} documents left with no job to finish them"

    def finish(self) -> None:
        """Well-behaved workers from here on: whatever was held is lost, the rest runs."""
        for job in self.held.values():
            with self.rt.db.session() as s:
                s.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.status == "running")
                    .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                )
        self.held.clear()
        runner = build_executor(self.rt, concurrency=0, name="finish")
        for _ in range(20):
            self.rt.queue.reap(on_dead=runner._dead_letter)
            with self.rt.db.session() as s:  # backoffs are not the point here
                s.execute(update(Job).where(Job.status == "pending").values(run_at=utcnow()))
            runner.run_until_idle(timeout=120)
            settle(self.rt, self.pipeline_id)
            self.check_settled()
            with self.rt.db.read_session() as s:
                status = s.execute(
                    select(Pipeline.status).where(Pipeline.id == self.pipeline_id)
                ).scalar_one()
            if status in ("completed", "completed_with_errors", "failed"):
                return
        raise AssertionError(f"the pipeline did not end: {status}")

    def check_outcome(self) -> None:
        with self.rt.db.read_session() as s:
            docs = s.execute(select(Document).where(Document.pipeline_id == self.pipeline_id)).scalars().all()
            jobs = s.execute(select(Job).where(Job.pipeline_id == self.pipeline_id)).scalars().all()
            unembedded = s.execute(
                select(func.count())
                .select_from(Chunk)
                .join(Document, Document.id == Chunk.document_id)
                .where(
                    Document.pipeline_id == self.pipeline_id,
                    Document.status == "indexed",
                    Chunk.embedded.is_(False),
                )
            ).scalar_one()
        assert unembedded == 0, "an indexed document has chunks without vectors"
        assert [d.status for d in docs if d.status not in ("indexed", "failed")] == []
        ended_badly = [j for j in jobs if j.status in ("failed", "dead")]
        for doc in docs:
            if doc.status != "failed":
                continue
            own = [j for j in ended_badly if _covers(j, doc.id)]
            assert own, f"document failed ({doc.error!r}) with no failed or dead job of its own"
            assert any((j.last_error or "") in (doc.error or "") for j in own), (doc.error, own)


def _covers(job: Job, doc_id: str) -> bool:
    if job.type == "embed_chunks":
        return True  # the embed loop works for every document of its pipeline
    return job.document_id == doc_id or doc_id in ((job.payload or {}).get("document_ids") or [])


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS, first=st.integers(min_value=0, max_value=3))
def test_no_interleaving_of_claim_reap_supersede_release_and_success_leaves_work_uncovered(
    world: tuple[Runtime, EmbeddedExecutor], steps: list[tuple[str, str]], first: int
) -> None:
    rt, executor = world
    _, pipeline_id = start_pipeline(rt, records(DOCS, words=20, skip=first), name="invariant")
    schedule = Schedule(rt, executor, pipeline_id)
    for action, worker in steps:
        schedule.step(action, worker)
    schedule.finish()
    schedule.check_outcome()


def test_a_pipeline_whose_jobs_all_ended_mid_way_is_repaired_not_failed(
    world: tuple[Runtime, EmbeddedExecutor],
) -> None:
    """The repair itself: the embed job of a pipeline is closed by hand (as a hole in the engine
    would leave it) while its documents wait: settle queues embedding again instead of failing
    them, counts the repair, and the pipeline completes."""
    rt, _ = world
    _, pipeline_id = start_pipeline(rt, records(2, words=20, skip=900), name="repair")
    runner = build_executor(rt, concurrency=0, name="repair")
    job = rt.queue.claim("w", ("process_document",))
    assert job is not None
    runner.run_job(job)
    job = rt.queue.claim("w", ("process_document",))
    assert job is not None
    runner.run_job(job)
    with rt.db.session() as s:  # the hole: the loop ends without anyone embedding
        s.execute(
            update(Job)
            .where(Job.pipeline_id == pipeline_id, Job.type == "embed_chunks")
            .values(status="cancelled", last_error="closed by the test")
        )
    settle(rt, pipeline_id)
    with rt.db.read_session() as s:
        p = s.get(Pipeline, pipeline_id)
        assert p is not None and (p.status, p.repairs) == ("running", 1)
        pending = (
            s.execute(select(Job.type).where(Job.pipeline_id == pipeline_id, Job.status == "pending"))
            .scalars()
            .all()
        )
    assert pending == ["embed_chunks"]
    runner.run_until_idle(timeout=60)
    settle(rt, pipeline_id)
    with rt.db.read_session() as s:
        statuses = s.execute(select(Document.status).where(Document.pipeline_id == pipeline_id)).scalars()
        assert sorted(statuses) == ["indexed", "indexed"]
        p = s.get(Pipeline, pipeline_id)
        assert p is not None and p.status == "completed"
