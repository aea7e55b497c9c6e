"""The job types of lorebase, each declared once in a file of its own (``jobs/registry.py``).

| task | file | queue | what it does |
|---|---|---|---|
| ``process_document`` | ``process_document.py`` | process | parse + chunk + save a document (or a group of small ones) |
| ``embed_chunks`` | ``embed_chunks.py`` | embed | embed a pipeline's pending chunks, batch by batch |
| ``crawl_source`` | ``crawl_source.py`` | crawl | crawl a web source (native or Firecrawl), resumable |
| ``notify_webhook`` | ``notify_webhook.py`` | process | post a signed webhook when a pipeline ends |
| ``notify_email`` | ``notify_email.py`` | process | send an email when a pipeline ends |
| ``reindex_version`` | ``reindex_version.py`` | process | chunk a KB's documents for a new config version, beside the live one |
| ``evaluate`` | ``evaluate.py`` | process | score a KB's versions and search modes on labelled queries |
| ``purge_drafts`` | ``purge_drafts.py`` | process | periodic: delete expired drafts |
| ``refresh_sources`` | ``refresh_sources.py`` | process | periodic: refresh web sources whose ``refresh_every`` is due |
| ``blob_gc`` | ``blob_gc.py`` | process | periodic: delete unreferenced blobs after their grace period |
| ``retention`` | ``retention.py`` | process | periodic: delete old jobs, events, query logs, idempotency keys; drop originals past ``originals_days`` |

A periodic task's ``SPEC`` says how often it runs (``every``); the scheduler
(``jobs/scheduler.py``) queues it once per period across all processes.

To add one: a file here with its ``SPEC`` (and an ``enqueue`` helper for its callers), its
handler where its work lives, and a line in :data:`REGISTRY`.
"""

from __future__ import annotations

from lorebase.jobs.registry import Registry
from lorebase.tasks import (
    blob_gc,
    crawl_source,
    embed_chunks,
    evaluate,
    notify_email,
    notify_webhook,
    process_document,
    purge_drafts,
    refresh_sources,
    reindex_version,
    retention,
)

#: every job type; the executors, the dispatcher and the Celery/RQ delivery read it
REGISTRY = Registry.of(
    [
        process_document.SPEC,
        embed_chunks.SPEC,
        crawl_source.SPEC,
        notify_webhook.SPEC,
        notify_email.SPEC,
        reindex_version.SPEC,
        evaluate.SPEC,
        purge_drafts.SPEC,
        refresh_sources.SPEC,
        blob_gc.SPEC,
        retention.SPEC,
    ]
)
