"""``refresh_sources`` (periodic, every ``scheduler.refresh_seconds``): start a refresh of each web
source whose ``refresh_every`` is due (``services/sources.py``: one pipeline per source, never
two for one period, none while its last crawl's pipeline is still going)."""

from __future__ import annotations

from lorebase.jobs.registry import TaskSpec

NAME = "refresh_sources"

SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.services.sources:RefreshDueSources",
    kind="process",
    priority=1,  # it only queues the crawls, which have their tenants' priority
    every=lambda settings: settings.scheduler.refresh_seconds,
    summary="periodic: refresh the web sources whose refresh_every is due",
)
