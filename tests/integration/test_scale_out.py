"""The scaled mode with real processes: 1 API and 3 Celery workers, each with a data dir of its
own as if on its own host, sharing only PostgreSQL (+ pgvector, from pgserver), Redis (broker)
and the database blob store. One worker is SIGKILLed, pool and all, while it holds a job; the
ingestion must still end with every document indexed exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from conftest import finalize_draft, wait_pipeline
from factories import html_page
from lorebase.db.engine import Database
from lorebase.db.models import Chunk, Document, Job
from lorebase.jobs.scheduler import SYSTEM_WORKSPACE
from lorebase.services.auth import create_key
from support.cluster import Cluster, redis_available
from support.faults import records
from support.pg import migrated_database_of_its_own

N_RECORDS = 300
N_FILES = 12

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def database() -> Iterator[tuple[str, Database]]:
    with migrated_database_of_its_own() as made:
        yield made


@pytest.fixture
def redis_up() -> None:
    if not redis_available():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not reachable at 127.0.0.1:6379 (CI must start it)")
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")


def _running_owner_pids(db: Database) -> list[int]:
    """Pids of the processes holding the lease of an embed loop now (owner is
    ``host:pid:executor``). An embed loop runs for seconds, so a kill aimed at its holder lands
    while it still holds it; a short job could end between the look and the kill."""
    with db.read_session() as s:
        owners = (
            s.execute(select(Job.lease_owner).where(Job.status == "running", Job.type == "embed_chunks"))
            .scalars()
            .all()
        )
    return [int(o.split(":")[1]) for o in owners if o and o.count(":") >= 2]


def test_one_api_three_celery_workers_survive_a_killed_worker(
    tmp_path: Path, database: tuple[str, Database], redis_up: None
) -> None:
    url, db = database
    key, _ = create_key(db, workspace="default")
    auth = {"Authorization": f"Bearer {key}"}
    cluster = Cluster(
        tmp_path,
        url,
        env={"LOREBASE_EMBED_BATCH_SIZE": "16", "LOREBASE_JOBS__EMBED_PARTITIONS": "3"},
        forked=True,
    )
    try:
        base = cluster.start_api()
        for _ in range(3):
            cluster.start_worker(concurrency=1)
        docs = records(N_RECORDS)
        files = [
            (
                "files",
                (
                    f"page{i}.html",
                    html_page(f"Page {i}", "Topic", f"Harbour number {i} has cranes."),
                    "text/html",
                ),
            )
            for i in range(N_FILES)
        ]
        with httpx.Client(base_url=base, timeout=60) as api:
            started = time.monotonic()
            body = finalize_draft(api, auth, files=files, records=docs, name="scaled")  # type: ignore[arg-type]
            finalize_seconds = time.monotonic() - started
            kb_id, pipeline_id = body["kb_id"], body["pipeline_id"]

            # kill a worker while it holds a job, once a good part of the work is done
            victim = None
            deadline = time.monotonic() + 300
            while victim is None and time.monotonic() < deadline:
                for i, w in enumerate(cluster.workers):
                    assert w.poll() is None, f"worker {i} exited:\n{cluster.log(f'worker{i}')[-3000:]}"
                if "Traceback" in cluster.log("worker0"):
                    pytest.fail(f"worker 0 failed:\n{cluster.log('worker0')[-3000:]}")
                with db.read_session() as s:
                    done = s.execute(
                        select(func.count())
                        .select_from(Document)
                        .where(Document.kb_id == kb_id, Document.status == "indexed")
                    ).scalar_one()
                if done >= N_RECORDS // 4:
                    holders = [cluster.worker_of_pid(pid) for pid in _running_owner_pids(db)]
                    victim = next((w for w in holders if w is not None), None)
                time.sleep(0.05)
            assert victim is not None, "no worker held a job after a quarter of the documents"
            with db.read_session() as s:
                indexed_at_kill = s.execute(
                    select(func.count())
                    .select_from(Document)
                    .where(Document.kb_id == kb_id, Document.status == "indexed")
                ).scalar_one()
            cluster.kill_worker(victim)
            assert indexed_at_kill < N_RECORDS + N_FILES, "the kill came after the end: it tests nothing"

            state = wait_pipeline(api, auth, pipeline_id, timeout=600)  # type: ignore[arg-type]
            assert state["status"] == "completed", state
            hits = api.post(
                f"/api/v1/kbs/{kb_id}/search",
                json={"query": "harbour number 7 cranes", "top_k": 3},
                headers=auth,
            ).json()

        total = N_RECORDS + N_FILES
        with db.read_session() as s:
            statuses = dict(
                s.execute(
                    select(Document.status, func.count())
                    .where(Document.kb_id == kb_id)
                    .group_by(Document.status)
                ).all()
            )
            chunks = s.execute(
                select(func.count()).select_from(Chunk).where(Chunk.kb_id == kb_id)
            ).scalar_one()
            unembedded = s.execute(
                select(func.count()).select_from(Chunk).where(Chunk.kb_id == kb_id, Chunk.embedded.is_(False))
            ).scalar_one()
            per_doc = s.execute(
                select(Document.chunk_count, func.count(Chunk.pk))
                .join(Chunk, Chunk.document_id == Document.id)
                .where(Document.kb_id == kb_id)
                .group_by(Document.id, Document.chunk_count)
            ).all()
            # the vectors: exactly one row per chunk in the pgvector table, none elsewhere
            vectors = s.execute(
                text("SELECT count(*), count(DISTINCT pk) FROM pgvector_chunks_384 WHERE kb_id = :kb"),
                {"kb": kb_id},
            ).one()
            reaped = s.execute(
                select(func.count()).select_from(Job).where(Job.last_error.like("worker lost%"))
            ).scalar_one()
            job_states = dict(  # the pipelines' jobs (periodic housekeeping may be pending at any time)
                s.execute(
                    select(Job.status, func.count())
                    .where(Job.workspace_id != SYSTEM_WORKSPACE)
                    .group_by(Job.status)
                ).all()
            )
        assert statuses == {"indexed": total}
        assert chunks >= total and unembedded == 0
        assert all(expected == actual for expected, actual in per_doc)
        assert tuple(vectors) == (chunks, chunks)
        assert reaped >= 1, "the killed worker's job was not taken back by the reaper"
        assert set(job_states) <= {"succeeded", "cancelled"}, job_states
        assert hits["results"] and hits["results"][0]["filename"] == "page7.html"
        survivors = [i for i in range(3) if i != victim]
        for i in survivors:  # the work was shared
            assert "succeeded" in cluster.log(f"worker{i}"), cluster.log(f"worker{i}")[-2000:]
        assert finalize_seconds < 30
    finally:
        cluster.stop()
