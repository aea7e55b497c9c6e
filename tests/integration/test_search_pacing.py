"""Searches while this server ingests take turns and keep to a share of the time (``api/pacing.py``).

A real Runtime on its own SQLite file; "ingesting" is a job row in ``running``, as the server's
workers leave it while they work. The searches are stand-in functions that take a known time, so
what is pinned is the pacing itself: one at a time, each followed by a pause in proportion.
"""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from pathlib import Path

from sqlalchemy import update

from conftest import make_settings
from lorebase.api.pacing import SearchPacer
from lorebase.db.models import Job
from lorebase.runtime import Runtime
from lorebase.services.auth import local_principal
from lorebase.settings import LimitSettings

TOOK = 0.05  # seconds each stand-in search takes
SHARE = 0.5  # so each is followed by a pause as long as itself


def _runtime(tmp_path: Path, workers: int = 2) -> Runtime:
    return Runtime(
        make_settings(
            tmp_path / "data", workers=workers, limits=LimitSettings(search_share_while_ingesting=SHARE)
        )
    )


def _job_running(runtime: Runtime) -> None:
    ws = local_principal(runtime.db).workspace_id
    with runtime.db.session() as s:
        job_id = runtime.queue.enqueue(s, type="process_document", workspace_id=ws)
        s.execute(update(Job).where(Job.id == job_id).values(status="running"))


def _searches(runtime: Runtime, n: int) -> list[tuple[float, float]]:
    """``n`` concurrent stand-in searches through one pacer: each one's (start, end)."""
    pacer = SearchPacer()
    spans: list[tuple[float, float]] = []

    def search() -> None:
        started = time.monotonic()
        time.sleep(TOOK)
        spans.append((started, time.monotonic()))

    async def main() -> None:
        await asyncio.gather(*(pacer.run(runtime, search) for _ in range(n)))

    asyncio.run(main())
    return sorted(spans)


def test_while_jobs_run_searches_take_turns_and_keep_to_their_share(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    try:
        _job_running(runtime)
        spans = _searches(runtime, 4)
    finally:
        runtime.close()
    assert len(spans) == 4  # every search answered, none refused
    for (_, end), (start, _) in pairwise(spans):
        # no overlap, and a pause of took * (1 / share - 1) (= took at 0.5) before the next
        assert start - end >= TOOK * (1 / SHARE - 1) * 0.9


def test_without_running_jobs_or_local_workers_nothing_is_paced(tmp_path: Path) -> None:
    idle = _runtime(tmp_path / "idle")
    api_only = _runtime(tmp_path / "api-only", workers=0)  # the work runs elsewhere
    try:
        _job_running(api_only)
        for runtime in (idle, api_only):
            spans = _searches(runtime, 4)
            first_end = spans[0][1]
            assert all(start < first_end for start, _ in spans)  # all ran at once
    finally:
        idle.close()
        api_only.close()
