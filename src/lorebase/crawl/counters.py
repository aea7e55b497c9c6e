"""A crawl's page counters on its pipeline (``pages_discovered``, ``pages_fetched``,
``pages_skipped``), shared by the built-in crawler and the Firecrawl engine."""

from __future__ import annotations

from sqlalchemy.orm import Session

from lorebase.db.models import Pipeline
from lorebase.jobs.context import JobContext
from lorebase.runtime import Runtime

#: ``pages_fetched`` counts pages that got an HTTP answer this run; ``pages_skipped`` those that
#: led to no processing (robots, duplicates, noindex, unchanged)
SKIPPED = ("skipped", "unchanged")


def apply_page_counts(s: Session, ctx: JobContext[Runtime], mine: dict[str, int]) -> None:
    """Set this source's share of the pipeline's page counters (several sources may share a
    pipeline: the job's checkpoint remembers what it added last time, in the same transaction)."""
    pipeline = s.get(Pipeline, ctx.job.pipeline_id) if ctx.job.pipeline_id else None
    if pipeline is None:
        return
    before = ctx.job.checkpoint.get("counts") or {"discovered": 0, "fetched": 0, "skipped": 0}
    # added in SQL, not read-modify-write: on PostgreSQL another source's crawl job may update the
    # same pipeline at once (SQLite runs write transactions one at a time)
    pipeline.pages_discovered = Pipeline.pages_discovered + (mine["discovered"] - before["discovered"])
    pipeline.pages_fetched = Pipeline.pages_fetched + (mine["fetched"] - before["fetched"])
    pipeline.pages_skipped = Pipeline.pages_skipped + (mine["skipped"] - before["skipped"])
    s.flush()  # the new values are read back (expired attributes reload) by whoever looks next
    ctx.save_checkpoint(s, {**ctx.job.checkpoint, "counts": mine})
