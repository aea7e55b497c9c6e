"""``crawl_source``: crawl one web source for one pipeline (``crawl/job.py``; the Firecrawl engine
in ``crawl/firecrawl_job.py``). Resumable from its frontier in the database: every committed
batch of pages is saved progress. One crawl of a source runs at a time (the concurrency key),
and the pages it finds are processed by ``process_document`` jobs at this same bulk priority."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lorebase.jobs.registry import TaskSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from lorebase.runtime import Runtime

NAME = "crawl_source"
#: bulk work (the crawl and its pages): below uploads (10) and the embedder (20)
PRIORITY = 5


def _one_crawl_per_source(job_payload: Mapping[str, Any]) -> str:
    return f"crawl:{job_payload['source_id']}"


SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.crawl.job:CrawlSource",
    kind="crawl",
    priority=PRIORITY,
    resumable=True,
    concurrency_key=_one_crawl_per_source,
    summary="crawl a web source (built-in crawler or Firecrawl), resumable from its frontier",
)


def enqueue(
    s: Session, runtime: Runtime, *, workspace_id: str, kb_id: str, pipeline_id: str, source_id: str
) -> None:
    SPEC.enqueue(
        s,
        runtime.queue,
        runtime.settings,
        workspace_id=workspace_id,
        pipeline_id=pipeline_id,
        kb_id=kb_id,
        payload={"source_id": source_id},
        dedupe_key=f"crawl:{pipeline_id}:{source_id}",
    )
