"""The ``openai:`` request budget holds across worker processes: 1 API and 3 Celery workers (each
with a data dir of its own, as if on its own host) share PostgreSQL and Redis, and embed one
pipeline in 3 partitions against an endpoint limited to ``RPM`` requests per ``WINDOW`` seconds
(``LOREBASE_OPENAI_RPM`` counted in a ``LOREBASE_OPENAI_RATE_WINDOW_SECONDS`` window, so the
test takes seconds, not minutes). The endpoint (a recording proxy in front of Infinity) notes
every request's arrival: no sliding window holds more than ``RPM`` of them, and every document
ends indexed (waiting for budget never fails one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from conftest import finalize_draft, wait_pipeline
from lorebase.db.engine import Database
from lorebase.db.models import Document, Job
from lorebase.services.auth import create_key
from support.cluster import Cluster, redis_available
from support.faults import records
from support.openai_proxy import OpenAIProxy
from support.pg import migrated_database_of_its_own

RPM = 3
WINDOW = 4  # seconds
N_RECORDS = 18  # 2 per request: 9 requests (3 windows at least), and the validation's probe

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def database() -> Iterator[tuple[str, Database]]:
    with migrated_database_of_its_own() as made:
        yield made


def most_in_a_window(times: list[float], window: float) -> int:
    """The most arrivals in any half-open window ``[t, t + window)`` (one starting at each)."""
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


def test_three_workers_together_stay_under_the_endpoint_s_request_budget(
    tmp_path: Path, database: tuple[str, Database], infinity: str
) -> None:
    if not redis_available():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not reachable at 127.0.0.1:6379 (CI must start it)")
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    url, db = database
    key, _ = create_key(db, workspace="default")
    auth = {"Authorization": f"Bearer {key}"}
    proxy = OpenAIProxy(infinity)
    with proxy as base_url:
        cluster = Cluster(
            tmp_path,
            url,
            env={
                "LOREBASE_OPENAI_BASE_URL": base_url,
                "LOREBASE_OPENAI_RPM": str(RPM),
                "LOREBASE_OPENAI_RATE_WINDOW_SECONDS": str(WINDOW),
                "LOREBASE_OPENAI_BATCH_SIZE": "2",
                "LOREBASE_OPENAI_MAX_TOKENS": "256",
                "LOREBASE_EMBED_BATCH_SIZE": "2",
                "LOREBASE_JOBS__EMBED_PARTITIONS": "3",
            },
            forked=True,
        )
        try:
            base = cluster.start_api()
            for _ in range(3):
                cluster.start_worker(concurrency=1)
            with httpx.Client(base_url=base, timeout=60) as api:
                started = time.monotonic()
                body = finalize_draft(
                    api,  # type: ignore[arg-type]
                    auth,
                    records=records(N_RECORDS, words=40),
                    name="budgeted",
                    config={"embedding": {"model": "openai:all-MiniLM-L6-v2"}},
                )
                state = wait_pipeline(api, auth, body["pipeline_id"], timeout=120)  # type: ignore[arg-type]
                took = time.monotonic() - started
            assert state["status"] == "completed", state
            with db.read_session() as s:
                statuses = dict(
                    s.execute(
                        select(Document.status, func.count())
                        .where(Document.kb_id == body["kb_id"])
                        .group_by(Document.status)
                    ).all()
                )
                errors = s.execute(select(Job.last_error).where(Job.last_error.is_not(None))).scalars().all()
        finally:
            cluster.stop()
    arrivals = proxy.arrivals
    times = [a.at - arrivals[0].at for a in arrivals]
    peak = most_in_a_window(times, WINDOW)
    print(
        f"{len(arrivals)} requests in {times[-1]:.1f} s (pipeline {took:.1f} s), at "
        + ", ".join(f"{t:.2f}" for t in times)
        + f"; most in any {WINDOW} s window: {peak} (budget {RPM})"
    )
    assert statuses == {"indexed": N_RECORDS}
    assert not errors, errors  # no attempt failed: over-budget requests waited
    assert all(a.answered == 200 for a in arrivals)
    assert len(arrivals) >= N_RECORDS // 2
    assert peak <= RPM
    # the budget, not the workers, set the pace: the embedding requests (after the validation's
    # probe) spanned more than two windows
    assert times[-1] - times[1] >= 2 * WINDOW
