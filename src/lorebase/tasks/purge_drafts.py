"""``purge_drafts`` (periodic): delete expired drafts. Their uploads lose their last reference
and the blob GC frees them after its grace period (``services/drafts.py``)."""

from __future__ import annotations

from lorebase.jobs.registry import TaskSpec

NAME = "purge_drafts"

SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.services.drafts:PurgeExpiredDrafts",
    kind="process",
    priority=1,  # housekeeping: below every user's work
    every=lambda settings: settings.scheduler.cleanup_seconds,
    summary="delete expired drafts (their uploads go to the blob GC)",
)
