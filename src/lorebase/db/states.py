"""The states of documents, pipelines and jobs, their terminal sets, and how a document changes
state (:func:`transition`): the one place these are written down.

The values are the strings stored in the ``status`` columns and shown by the API (DESIGN.md §4);
the enums are ``StrEnum`` so a member *is* its string (in comparisons, JSON and SQL alike).

Documents move ``pending`` → (``fetching``) → ``parsing`` → (``chunking``) → ``embedding`` →
``indexed``, or end ``failed`` (with ``error`` and ``error_kind``), ``skipped`` (unchanged
content) or ``cancelled``. A document's every change of state goes through :func:`transition`,
which updates the rows and records a ``document`` event per row in the pipeline's event log, in
the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from lorebase.db import events
from lorebase.db.models import Document, utcnow


class DocumentStatus(StrEnum):
    PENDING = "pending"
    FETCHING = "fetching"
    PARSING = "parsing"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


#: a document in one of these states is done with (for this pipeline)
DOCUMENT_FINAL: tuple[DocumentStatus, ...] = (
    DocumentStatus.INDEXED,
    DocumentStatus.FAILED,
    DocumentStatus.SKIPPED,
    DocumentStatus.CANCELLED,
)
#: states before its chunks are saved: a ``process_document`` job finishes these
DOCUMENT_BEFORE_EMBEDDING: tuple[DocumentStatus, ...] = (
    DocumentStatus.PENDING,
    DocumentStatus.FETCHING,
    DocumentStatus.PARSING,
    DocumentStatus.CHUNKING,
)
#: a document that needs processing again when it is re-added (anything else unchanged is skipped)
DOCUMENT_RETRYABLE: tuple[DocumentStatus, ...] = (DocumentStatus.FAILED, DocumentStatus.CANCELLED)


class PipelineStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"


PIPELINE_FINAL: tuple[PipelineStatus, ...] = (
    PipelineStatus.COMPLETED,
    PipelineStatus.COMPLETED_WITH_ERRORS,
    PipelineStatus.FAILED,
    PipelineStatus.CANCELLED,
)
#: pipelines in these states hand out no new work (their jobs are not claimed or dispatched)
PIPELINE_HELD: tuple[PipelineStatus, ...] = (
    PipelineStatus.PAUSED,
    PipelineStatus.CANCELLING,
    PipelineStatus.CANCELLED,
)
#: pipelines that settling (and the maintenance sweep) looks at
PIPELINE_SETTLING: tuple[PipelineStatus, ...] = (
    PipelineStatus.QUEUED,
    PipelineStatus.RUNNING,
    PipelineStatus.CANCELLING,
)


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"


JOB_ACTIVE: tuple[JobStatus, ...] = (JobStatus.PENDING, JobStatus.RUNNING)
JOB_FINAL: tuple[JobStatus, ...] = (
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.DEAD,
)
#: a job that ended in one of these gave up on its work: its error is what its documents show
JOB_GAVE_UP: tuple[JobStatus, ...] = (JobStatus.FAILED, JobStatus.DEAD)


class VersionStatus(StrEnum):
    """A KB config version (``KbVersion``): ``building`` → ``complete`` → ``live`` → ``retired``
    (and back to ``live`` on rollback), or ``failed`` / ``cancelled`` when its build stopped."""

    BUILDING = "building"
    COMPLETE = "complete"
    LIVE = "live"
    RETIRED = "retired"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: versions whose index ingestion keeps current: a new document gets chunks in each of them
VERSION_MAINTAINED: tuple[VersionStatus, ...] = (
    VersionStatus.LIVE,
    VersionStatus.BUILDING,
    VersionStatus.COMPLETE,
)
#: versions whose index is whole: they can be searched by number and activated
VERSION_SEARCHABLE: tuple[VersionStatus, ...] = (
    VersionStatus.LIVE,
    VersionStatus.COMPLETE,
    VersionStatus.RETIRED,
)


class EvaluationStatus(StrEnum):
    """A retrieval evaluation (``Evaluation``, ``services/evaluations.py``): ``queued`` →
    ``running`` → ``completed``, or ``failed`` with its ``error``."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


EVALUATION_FINAL: tuple[EvaluationStatus, ...] = (EvaluationStatus.COMPLETED, EvaluationStatus.FAILED)


def transition(
    session: Session,
    where: ColumnElement[bool] | Sequence[ColumnElement[bool]],
    status: DocumentStatus,
    *,
    error: str | None = None,
    error_kind: str | None = None,
    **values: Any,
) -> list[Any]:
    """Move the documents matching ``where`` to ``status`` in the caller's transaction, and
    record a ``document`` event for each on its pipeline's log. ``error`` and ``error_kind`` are
    set with the status (cleared when not given); ``values`` are further columns
    (``indexed_at``, ...). Returns the changed rows (``events.DOCUMENT_COLUMNS``)."""
    conditions = [where] if isinstance(where, ColumnElement) else list(where)
    rows = session.execute(
        update(Document)
        .where(*conditions)
        .values(status=status, error=error, error_kind=error_kind, updated_at=utcnow(), **values)
        .returning(*events.DOCUMENT_COLUMNS)
    ).all()
    events.record_documents(session, rows)
    return list(rows)


def recorded(session: Session, documents: Iterable[Document]) -> None:
    """Record the ``document`` events of ORM rows whose state the caller set by hand (a batch
    saved through the ORM in the same transaction, whose other columns change too)."""
    events.record_documents(session, documents)
