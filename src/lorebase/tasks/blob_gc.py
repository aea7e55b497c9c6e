"""``blob_gc`` (periodic): delete blobs no one references once their grace period has passed
(``services/lifecycle.py`` says why a blob being referenced is never lost)."""

from __future__ import annotations

from lorebase.jobs.registry import TaskSpec

NAME = "blob_gc"

SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.services.lifecycle:CollectBlobs",
    kind="process",
    priority=1,  # housekeeping: below every user's work
    every=lambda settings: settings.scheduler.cleanup_seconds,
    summary="delete unreferenced blobs older than the grace period",
)
