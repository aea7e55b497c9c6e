"""Cleanup and retention: the blob GC, row retention and original-file retention, the handlers of
the periodic ``blob_gc`` and ``retention`` tasks (``tasks/``; the scheduler queues each once per
``scheduler.cleanup_seconds``). Every pass is idempotent: a second run finds nothing to do.

**Blob GC** (:func:`collect_garbage`). A blob is deleted when no one references it and it was
last stored longer than ``retention.blob_grace_seconds`` ago. References are ``documents.blob_key``
(every KB version reads its documents' blobs, so the documents cover the versions too), the source
items of every live draft (``runtime.drafts.blob_keys()``: the SQL table or Redis) and any
pending or running job whose payload names a ``blob_key`` (none does today: ``process_document``,
``reindex_version`` and ``crawl_source`` carry document, pipeline and source ids; a crawl puts
a page's blob while it fetches and adds its document with the batch's transaction, a window the
grace period covers, see 3.; the check is there for the task that will).

Why a blob being referenced is never lost:

1. Blobs are listed **before** the references are read. A blob listed and then referenced
   before the reference scan is seen as referenced. Drafts are read before documents, because
   finalize moves references from a draft to its documents: in one transaction with SQL drafts;
   with Redis drafts ``take`` leaves a short-lived tombstone holding the sources
   (``adapters/drafts/redis.py``), so the move has no moment where neither read sees them.
2. A blob is referenced only after it is ``put``, and a ``put`` of bytes already stored refreshes
   their ``stored_at``. So a new reference to bytes the GC considers old comes with a fresh
   ``stored_at``, and the delete is conditional on ``stored_at`` (``delete_unless_stored_since``
   of the local and database stores: a rename-aside or a single ``DELETE … WHERE created_at <``):
   a ``put`` before it wins, and a ``put`` after it stores the bytes again.
3. Between a ``put`` and the commit of the row that names it (an upload's document, a draft's
   source) the blob is unreferenced but young: the grace period covers that window. A store
   without a conditional delete (S3) relies on the grace period alone for case 2.

**Row retention** (:func:`apply_retention`): finished jobs by ``finished_at``, pipeline events,
query logs (per workspace: ``Workspace.retention`` overrides the setting) and idempotency keys
(old, or already expired) are deleted in batches of :data:`BATCH` rows, one short transaction
each, so a large table is never locked for long. 0 days means keep.

**Original-file retention** (:func:`remove_originals`): a workspace's documents indexed longer
than its ``originals_days`` ago lose their ``blob_key`` (``original_removed_at`` records when);
chunks and vectors stay and the blob GC frees the bytes. A re-parse or a re-index of such a
document fails it with a permanent error that says so (``pipeline/process.py``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, delete, select, tuple_, update
from sqlalchemy.orm import Session

from lorebase.adapters.blobs.protocol import StaleDelete
from lorebase.db.models import (
    Document,
    IdempotencyKey,
    Job,
    PipelineEvent,
    QueryLog,
    Workspace,
    utcnow,
)
from lorebase.db.states import JOB_ACTIVE, JOB_FINAL, DocumentStatus

if TYPE_CHECKING:
    from lorebase.jobs.context import JobContext
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.lifecycle")

#: rows deleted (or updated) per statement: each batch is a transaction of its own
BATCH = 5000
#: workspace ids per ``IN (…)`` list
_IDS = 500
_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class GcReport:
    listed: int
    referenced: int
    young: int
    deleted: int
    bytes_freed: int


def referenced_blob_keys(runtime: Runtime) -> set[str]:
    """Every blob key something still needs (see the module doc). Drafts are read before
    documents: finalize moves a draft's references to documents, never back, so whichever side
    of the move a read falls on, one of the two reads sees them."""
    keys = runtime.drafts.blob_keys()
    with runtime.db.read_session() as s:
        keys.update(
            k
            for k in s.execute(
                select(Document.blob_key).where(Document.blob_key.is_not(None)).distinct()
            ).scalars()
            if k is not None
        )
        payloads = s.execute(
            select(Job.payload).where(
                Job.status.in_(JOB_ACTIVE), cast(Job.payload, String).like("%blob_key%")
            )
        ).scalars()
        for payload in payloads:
            keys.update(_payload_keys(payload))
    return keys


def _payload_keys(value: Any) -> Iterator[str]:
    """``blob_key`` / ``blob_keys`` values anywhere in a job payload."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "blob_key" and isinstance(v, str):
                yield v
            elif k == "blob_keys" and isinstance(v, list):
                yield from (x for x in v if isinstance(x, str))
            else:
                yield from _payload_keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _payload_keys(v)


def collect_garbage(runtime: Runtime, *, grace_seconds: float | None = None) -> GcReport:
    """Delete the blobs no one references that were last stored over the grace period ago."""
    grace = runtime.settings.retention.blob_grace_seconds if grace_seconds is None else grace_seconds
    cutoff = utcnow() - timedelta(seconds=grace)
    listed = 0
    old: dict[str, int] = {}
    for key, stored_at, size in runtime.blobs.iter_blobs():  # listed first: see the module doc
        listed += 1
        if stored_at < cutoff:
            old[key] = size
    referenced = referenced_blob_keys(runtime) if old else set()
    deleted = freed = 0
    conditional = runtime.blobs if isinstance(runtime.blobs, StaleDelete) else None
    for key in old.keys() - referenced:
        if conditional is not None:
            if not conditional.delete_unless_stored_since(key, cutoff):
                continue  # stored again meanwhile
        else:
            runtime.blobs.delete(key)
        deleted += 1
        freed += old[key]
    report = GcReport(listed, len(old.keys() & referenced), listed - len(old), deleted, freed)
    if deleted:
        log.info("blob gc: deleted %d of %d blobs, %d bytes freed", deleted, listed, freed)
    return report


def _batched(runtime: Runtime, model: Any, where: list[Any]) -> int:
    """Delete the rows of ``model`` matching ``where``, :data:`BATCH` at a time."""
    pk = list(model.__table__.primary_key.columns)
    total = 0
    while True:
        chosen = select(*pk).where(*where).limit(BATCH)
        match = pk[0].in_(chosen) if len(pk) == 1 else tuple_(*pk).in_(chosen)
        with runtime.db.session() as s:
            n = s.execute(delete(model).where(match).execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        total += n
        if n < BATCH:
            return total


def _ago(days: float) -> datetime:
    return utcnow() - timedelta(seconds=days * _DAY)


def _workspaces_by_days(s: Session, runtime: Runtime, name: str) -> dict[float, list[str]]:
    """Workspace ids grouped by their effective retention ``name`` (0, keep, left out)."""
    groups: dict[float, list[str]] = defaultdict(list)
    for ws_id, overrides in s.execute(select(Workspace.id, Workspace.retention)):
        days = runtime.settings.retention.for_workspace(overrides, name)
        if days > 0:
            groups[days].append(ws_id)
    return groups


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    return (ids[i : i + _IDS] for i in range(0, len(ids), _IDS))


@dataclass(frozen=True, slots=True)
class RetentionReport:
    jobs: int
    events: int
    query_logs: int
    idempotency_keys: int
    originals: int


def apply_retention(runtime: Runtime) -> RetentionReport:
    """Delete what the retention settings no longer keep, then remove expired originals."""
    r = runtime.settings.retention
    jobs = events = queries = keys = 0
    if r.jobs_days > 0:
        jobs = _batched(runtime, Job, [Job.status.in_(JOB_FINAL), Job.finished_at < _ago(r.jobs_days)])
    if r.events_days > 0:
        events = _batched(runtime, PipelineEvent, [PipelineEvent.created_at < _ago(r.events_days)])
    with runtime.db.read_session() as s:
        groups = _workspaces_by_days(s, runtime, "query_logs_days")
    for days, ids in groups.items():
        for part in _chunks(ids):
            queries += _batched(
                runtime, QueryLog, [QueryLog.workspace_id.in_(part), QueryLog.created_at < _ago(days)]
            )
    stale = IdempotencyKey.expires_at < utcnow()
    if r.idempotency_days > 0:
        stale = stale | (IdempotencyKey.created_at < _ago(r.idempotency_days))
    keys = _batched(runtime, IdempotencyKey, [stale])
    report = RetentionReport(jobs, events, queries, keys, remove_originals(runtime))
    if any((jobs, events, queries, keys, report.originals)):
        log.info(
            "retention: deleted %d jobs, %d pipeline events, %d query logs, %d idempotency keys; "
            "removed %d originals",
            jobs,
            events,
            queries,
            keys,
            report.originals,
        )
    return report


def remove_originals(runtime: Runtime) -> int:
    """Drop the originals of documents indexed longer ago than their workspace's
    ``originals_days``; returns how many (their blobs go to the blob GC)."""
    with runtime.db.read_session() as s:
        groups = _workspaces_by_days(s, runtime, "originals_days")
    total = 0
    for days, ids in groups.items():
        for part in _chunks(ids):
            due = [
                Document.workspace_id.in_(part),
                Document.status == DocumentStatus.INDEXED,
                Document.indexed_at < _ago(days),
                Document.blob_key.is_not(None),
            ]
            while True:
                chosen = select(Document.id).where(*due).limit(BATCH)
                with runtime.db.session() as s:
                    n = s.execute(
                        update(Document)
                        .where(Document.id.in_(chosen), *due)
                        .values(blob_key=None, original_removed_at=utcnow())
                        .execution_options(synchronize_session=False)
                    ).rowcount  # type: ignore[attr-defined]
                total += n
                if n < BATCH:
                    break
    return total


class CollectBlobs:
    """Job handler of the periodic ``blob_gc`` task."""

    def run(self, ctx: JobContext[Runtime]) -> None:
        collect_garbage(ctx.runtime)

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        log.warning("blob gc failed: %s", message)


class ApplyRetention:
    """Job handler of the periodic ``retention`` task."""

    def run(self, ctx: JobContext[Runtime]) -> None:
        apply_retention(ctx.runtime)

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        log.warning("retention failed: %s", message)
