"""``retention`` (periodic): delete old finished jobs, pipeline events, query logs and idempotency
keys, and the originals of documents past their workspace's ``originals_days``
(``services/lifecycle.py``)."""

from __future__ import annotations

from lorebase.jobs.registry import TaskSpec

NAME = "retention"

SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.services.lifecycle:ApplyRetention",
    kind="process",
    priority=1,  # housekeeping: below every user's work
    every=lambda settings: settings.scheduler.cleanup_seconds,
    summary="delete rows past their retention, and originals past originals_days",
)
