"""The ``ingest`` section of ``benchmarks/scale.py``: ingest throughput with 1, 2 and 3 Celery
worker processes, on the scaled mode's real parts.

For each worker count: a fresh PostgreSQL database (pgserver, pgvector), a ``lorebase serve
--workers 0`` process and N ``lorebase worker --concurrency 1`` processes, each with a data dir
of its own (``tests/support/cluster.py``), Redis as the broker, ``jobs.embed_partitions`` = N.
A warm-up pipeline of a few documents runs first (it loads the model in every worker); then
``--ingest-docs`` SciFact abstracts (one ~120-token chunk each) are finalized through the HTTP
API and the clock runs from finalize to the pipeline's ``completed``. Documents per second, and
the ratio to one worker, measured one after the other in one run.

Each worker gets its share of the machine's cores (``OMP_NUM_THREADS`` = cores // N, the
model's threads), as if each had a host of its own. On one machine the cores bound the total,
so the best a ratio can be here is about 1.0: what the section measures is what distribution
costs (dispatch, claims, partitioned embedding, idle tails); on separate machines each worker
brings its own cores. Without the split, N workers each running the model on every core fight
over them (measured on 2 cores: 1 → 2 → 3 workers gave 1.0, 0.78, 0.64).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

INGEST_WORKERS = (1, 2, 3)


def _wait_ready(cluster: Any, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all("ready." in cluster.log(f"worker{i}") for i in range(n)):
            return
        for i, w in enumerate(cluster.workers):
            if w.poll() is not None:
                raise RuntimeError(f"worker {i} exited:\n{cluster.log(f'worker{i}')[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError("the workers did not become ready")


def _ingest(api: httpx.Client, auth: dict[str, str], docs: list[dict[str, str]], name: str) -> float:
    """Draft → text records → finalize; seconds from finalize to ``completed``."""
    r = api.post("/api/v1/kb-drafts", json={"name": name}, headers=auth)
    r.raise_for_status()
    draft = r.json()["id"]
    api.post(
        f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": docs}, headers=auth
    ).raise_for_status()
    started = time.perf_counter()
    r = api.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=auth)
    r.raise_for_status()
    pipeline = r.json()["pipeline_id"]
    while True:
        state = api.get(f"/api/v1/pipelines/{pipeline}", headers=auth).json()
        if state["status"] in ("completed", "completed_with_errors", "failed", "cancelled"):
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    if state["status"] != "completed" or state["counts"]["documents_done"] != len(docs):
        raise RuntimeError(f"the pipeline ended {state['status']}: {state}")
    return elapsed


def run(server_url: str, docs_count: int, log: Any) -> dict[str, Any]:
    from lorebase.db.engine import Database
    from lorebase.db.migrate import upgrade
    from lorebase.services.auth import create_key
    from support.cluster import Cluster, redis_available
    from support.faults import records
    from support.pg import create_database, drop_database

    if not redis_available():
        raise RuntimeError("the ingest section needs Redis at 127.0.0.1:6379")
    warm = records(6, skip=docs_count + 10)
    docs = records(docs_count)
    rows: dict[int, dict[str, Any]] = {}
    for n in INGEST_WORKERS:
        url = create_database(server_url)
        db = Database(url)
        try:
            upgrade(db.engine)
            key, _ = create_key(db, workspace="default")
            auth = {"Authorization": f"Bearer {key}"}
            with tempfile.TemporaryDirectory(prefix="lorebase-scale-") as tmp:
                # the machine's cores shared out, as if each worker had a host of its own: N
                # workers each using every core would only fight over them
                share = str(max(1, (os.cpu_count() or 1) // n))
                env = {"LOREBASE_JOBS__EMBED_PARTITIONS": str(n), "OMP_NUM_THREADS": share}
                cluster = Cluster(Path(tmp), url, env=env)
                try:
                    base = cluster.start_api()
                    for _ in range(n):
                        cluster.start_worker(concurrency=1)
                    _wait_ready(cluster, n)
                    with httpx.Client(base_url=base, timeout=60) as api:
                        _ingest(api, auth, warm, "warm-up")
                        seconds = _ingest(api, auth, docs, "measured")
                finally:
                    cluster.stop()
        finally:
            db.dispose()
            drop_database(server_url, url)
        rows[n] = {"seconds": round(seconds, 2), "docs_per_second": round(docs_count / seconds, 2)}
        log(f"ingest with {n} worker(s): {docs_count} documents in {seconds:.1f} s")
    base_rate = rows[1]["docs_per_second"]
    for row in rows.values():
        row["ratio_to_one"] = round(row["docs_per_second"] / base_rate, 2)
    return {"documents": docs_count, "by_workers": rows}
