"""SQLAlchemy 2.0 models for the whole data model of DESIGN.md §4.

Every row carries ``workspace_id`` (directly) so that every query can be scoped by workspace
without joins. Ids are UUID strings; chunks also have an integer ``pk`` that the vector and
keyword indexes use as their rowid. Vectors themselves live in the store, not here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, and comparisons must agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType, list[Any]: JSONType}


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: added to the priority of every job the workspace queues (a premium tenant goes first)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the worker pool that takes its jobs (``lorebase worker --pool NAME``); None: the default workers
    pool: Mapped[str | None] = mapped_column(String(100), default=None)
    #: per-tenant retention: ``originals_days``, ``query_logs_days`` (absent: the settings' default)
    retention: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(default=lambda: ["read", "write", "admin"])
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class KnowledgeBase(Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = (Index("ix_kb_workspace_name", "workspace_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="processing")
    created_by: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    #: the live config version (``kb_versions``): ``config`` is that version's config, and both
    #: change together in the transaction that activates a version (the atomic swap)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class KbVersion(Base):
    """One config version of a KB: its chunking, embedding and store, and the index built with
    them (chunks with this ``version``; store entries under ``index_key(kb_id, version)``).

    ``status`` (``db/states.py``, ``VersionStatus``): ``building`` while its re-index pipeline
    runs, ``complete`` once built and not (yet) activated, ``live`` for the one that answers
    searches, ``retired`` once replaced (kept for rollback, ``retention.kb_versions``),
    ``failed`` or ``cancelled`` when its build did not finish.
    """

    __tablename__ = "kb_versions"
    __table_args__ = (UniqueConstraint("kb_id", "version", name="uq_kb_versions_kb_version"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(12), default="building")
    #: ``always``, ``if_better`` (an evaluation decides) or ``manual``
    activate: Mapped[str] = mapped_column(String(12), default="always")
    pipeline_id: Mapped[str | None] = mapped_column(String(36), default=None)
    evaluation_id: Mapped[str | None] = mapped_column(String(36), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    #: ``[{"id", "error"}]``: documents its config could not chunk (they stay in the versions
    #: that have them; this one is built without them)
    failed_documents: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    activated_at: Mapped[datetime | None] = mapped_column(default=None)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)


class Evaluation(Base):
    """A retrieval evaluation of a KB: labelled queries run against versions and modes, as a job."""

    __tablename__ = "evaluations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(12), default="queued")
    #: what was asked: queries, qrels, versions, modes, from_feedback
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: ``{"<version>": {"<mode>": {"ndcg@10", "recall@10", "recall@100", "mrr@10"}}}``
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    per_query: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    pipeline_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Draft(Base):
    """A KB being drafted: nothing here is a KB, document or chunk until finalize."""

    __tablename__ = "drafts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sources: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Source(Base):
    """A source that yields documents over time (a website to crawl); files and text need none."""

    __tablename__ = "sources"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[str] = mapped_column(String(36), index=True)
    type: Mapped[str] = mapped_column(String(20))
    url: Mapped[str | None] = mapped_column(Text, default=None)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(default=None)
    #: ``refresh_every`` in seconds (web sources): the scheduler refreshes the source when
    #: ``next_refresh_at`` has passed
    refresh_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    next_refresh_at: Mapped[datetime | None] = mapped_column(default=None, index=True)


class CrawlPage(Base):
    """The crawl frontier of a web source, kept across runs.

    A row per URL (normalised) the crawler has discovered. ``run_id`` is the pipeline that last
    queued it; a page is ``queued`` until that run fetched it, so a crawl that stops (pause,
    crash, restart) resumes with the rows still queued and never fetches finished pages again.
    ``etag`` / ``last_modified`` / ``content_hash`` make the next refresh conditional, and
    ``links`` keeps the page's in-scope links so an unchanged page still leads to its children.
    """

    __tablename__ = "crawl_pages"
    __table_args__ = (
        UniqueConstraint("source_id", "url_hash", name="uq_crawl_page_source_url"),
        Index("ix_crawl_pages_frontier", "source_id", "run_id", "status", "depth"),
        Index("ix_crawl_pages_content", "source_id", "content_hash"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    kb_id: Mapped[str] = mapped_column(String(36), index=True)
    workspace_id: Mapped[str] = mapped_column(String(36))
    url: Mapped[str] = mapped_column(Text)  # the key: normalize_url(), one row per page
    fetch_url: Mapped[str | None] = mapped_column(Text, default=None)  # what to request (fetch_form())
    url_hash: Mapped[str] = mapped_column(String(64))
    depth: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12), default="queued")
    run_id: Mapped[str] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(default=None)
    http_status: Mapped[int | None] = mapped_column(Integer, default=None)
    etag: Mapped[str | None] = mapped_column(Text, default=None)
    last_modified: Mapped[str | None] = mapped_column(Text, default=None)
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    document_id: Mapped[str | None] = mapped_column(String(36), default=None)
    links: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    fetched_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("kb_id", "external_id", name="uq_document_kb_external_id"),
        Index("ix_documents_kb_status", "kb_id", "status"),
        # the workspace quota's usage (count, bytes) from the index alone (migration 0008)
        Index("ix_documents_workspace_usage", "workspace_id", "source_type", "size_bytes"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(String(36))
    source_id: Mapped[str | None] = mapped_column(String(36), default=None)
    pipeline_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    external_id: Mapped[str | None] = mapped_column(String(500), default=None)
    source_type: Mapped[str] = mapped_column(String(10))
    source_url: Mapped[str | None] = mapped_column(Text, default=None)
    filename: Mapped[str | None] = mapped_column(String(300), default=None)
    media_type: Mapped[str | None] = mapped_column(String(120), default=None)
    blob_key: Mapped[str | None] = mapped_column(String(200), default=None)
    size_bytes: Mapped[int | None] = mapped_column(Integer, default=None)
    title: Mapped[str | None] = mapped_column(Text, default=None)
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    error_kind: Mapped[str | None] = mapped_column(String(20), default=None)
    page_count: Mapped[int | None] = mapped_column(Integer, default=None)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    indexed_at: Mapped[datetime | None] = mapped_column(default=None)
    #: the original was deleted by the workspace's retention (``blob_key`` is then None); the
    #: chunks and vectors stay, but a re-index or a re-parse has nothing to read
    original_removed_at: Mapped[datetime | None] = mapped_column(default=None)


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_kb_version_embedded", "kb_id", "version", "embedded"),)
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    kb_id: Mapped[str] = mapped_column(String(36))
    workspace_id: Mapped[str] = mapped_column(String(36))
    chunk_index: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    embed_text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    embedded: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the KB config version this chunk belongs to (``KbVersion``): a document has chunks in
    #: every version that is live, building or complete
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def index_key(kb_id: str, version: int) -> str:
    """The store's key of a KB version's entries: the KB id for version 1 (what every KB had
    before versions), ``<kb id>@v<n>`` after; :func:`split_index_key` reads it back."""
    return kb_id if version == 1 else f"{kb_id}@v{version}"


def split_index_key(key: str) -> tuple[str, int]:
    kb_id, sep, version = key.partition("@v")
    return (kb_id, int(version)) if sep else (kb_id, 1)


class Pipeline(Base):
    __tablename__ = "pipelines"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="ingest")
    status: Mapped[str] = mapped_column(String(24), default="queued")
    phase: Mapped[str] = mapped_column(String(24), default="queued")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    pages_discovered: Mapped[int] = mapped_column(Integer, default=0)
    pages_fetched: Mapped[int] = mapped_column(Integer, default=0)
    pages_skipped: Mapped[int] = mapped_column(Integer, default=0)
    documents_total: Mapped[int] = mapped_column(Integer, default=0)
    documents_done: Mapped[int] = mapped_column(Integer, default=0)
    documents_failed: Mapped[int] = mapped_column(Integer, default=0)
    documents_skipped: Mapped[int] = mapped_column(Integer, default=0)
    chunks_created: Mapped[int] = mapped_column(Integer, default=0)
    chunks_embedded: Mapped[int] = mapped_column(Integer, default=0)
    chunks_indexed: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # the sequence number of the pipeline's last event (``PipelineEvent.seq``): bumped in the
    # transaction that records the event, so the row lock orders events as their commits are
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: times settling found work that no job covered and queued it again (a safety net, bounded)
    repairs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    #: a scheduled start (``not_before`` of finalize / refresh / documents): its jobs wait until then
    not_before: Mapped[datetime | None] = mapped_column(default=None)


class PipelineEvent(Base):
    """What a pipeline's watchers are told (progress, document transitions, its end), kept so that
    a reconnecting client (SSE ``Last-Event-ID``) resumes after the last event it saw: nothing
    missed, nothing repeated. Written in the transaction of the change it reports."""

    __tablename__ = "pipeline_events"
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_lease", "status", "lease_expires_at"),
        # At most one *pending* job per dedupe key; a running one may coexist with a new pending one.
        Index(
            "uq_jobs_pending_dedupe",
            "dedupe_key",
            unique=True,
            sqlite_where=text("status = 'pending' AND dedupe_key IS NOT NULL"),
            postgresql_where=text("status = 'pending' AND dedupe_key IS NOT NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    pipeline_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    kb_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    workspace_id: Mapped[str] = mapped_column(String(36), index=True)
    document_id: Mapped[str | None] = mapped_column(String(36), default=None)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    #: attempts in a row that moved nothing, against ``max_attempts`` (``jobs/retry.py``: progress
    #: starts the count afresh)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: claims so far, never given back: with ``lease_owner``, the fencing token of an attempt
    claims: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the current attempt saved a checkpoint or progress (reset at each claim)
    progressed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    error_kind: Mapped[str | None] = mapped_column(String(20), default=None)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), default=None)
    concurrency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    #: the worker pool that may take it (the workspace's, when queued); None: the default workers
    pool: Mapped[str | None] = mapped_column(String(100), default=None)
    #: when a broker message for this pending job was last sent (Celery/RQ executors); NULL: never
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


#: claim's order, in the index itself: no sort of every pending job per claim (34 ms of CPU per
#: claim at 100k pending without it; benchmarks/queue.py)
Index("ix_jobs_claim", Job.status, Job.priority.desc(), Job.run_at, Job.created_at)


class Blob(Base):
    """Uploads and fetched pages kept in the database (``blob_store = "database"``), content-addressed."""

    __tablename__ = "blobs"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    #: when the bytes were last stored: a ``put`` of bytes already here moves it (blob GC's grace)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class QueryLog(Base):
    __tablename__ = "query_logs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[str] = mapped_column(String(36), index=True)
    query: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(10))
    top_k: Mapped[int] = mapped_column(Integer)
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result_chunk_ids: Mapped[list[Any]] = mapped_column(default=list)
    latency_ms: Mapped[float] = mapped_column(Float)
    feedback: Mapped[str | None] = mapped_column(String(10), default=None)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    feedback_at: Mapped[datetime | None] = mapped_column(default=None)


class EmbeddingCache(Base):
    """(model, text hash) -> vector, so unchanged text is never embedded twice."""

    __tablename__ = "embedding_cache"
    model_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """A claimed ``Idempotency-Key`` and, once its request finished, the response to replay.

    Scope is (workspace, key, method, path): the unique constraint makes claiming a key one
    atomic insert. ``status`` is ``in_flight`` while the first request runs, then ``done`` with
    the stored response. Rows past ``expires_at`` are ignored and deleted by the next claim
    (``api/idempotency.py``).
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("workspace_id", "key", "method", "path", name="uq_idempotency_key_scope"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default="in_flight")
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_content_type: Mapped[str | None] = mapped_column(String(255), default=None)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Schedule(Base):
    """A periodic task (``jobs/scheduler.py``): the period it last ran for and when it runs next.

    Periods are numbered from the epoch (``floor(now / period_seconds)``). A process that finds a
    task due moves ``last_period`` forward with a compare-and-set and queues the period's job in the
    same transaction: of any number of processes, exactly one queues each period's job.
    """

    __tablename__ = "schedules"
    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    period_seconds: Mapped[float] = mapped_column(Float)
    last_period: Mapped[int] = mapped_column(BigInteger, default=-1, server_default="-1")
    last_job_id: Mapped[str | None] = mapped_column(String(36), default=None)
    last_run_at: Mapped[datetime | None] = mapped_column(default=None)
    next_run_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ServerSecret(Base):
    """A key every process of a deployment shares (``signed_urls``: the HMAC key of signed links
    to originals), made once by whichever process needs it first."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
