"""What the API answers, as typed values (DESIGN.md §7).

The request bodies are the API's own models (``lorebase.api.schemas.requests``); the answers are
plain dicts shaped by the services, so their models live here. Every model keeps the fields it
does not name (``extra="allow"``): a newer server may say more, and an older client still reads
what it knows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow")


T = TypeVar("T", bound=BaseModel)


class Page(ApiModel, Generic[T]):
    """A list endpoint's answer: one page of ``items`` and the ``total`` over every page."""

    items: list[T]
    total: int | None = None


class DraftSource(ApiModel):
    id: str
    type: Literal["file", "web", "text"]
    url: str | None = None
    filename: str | None = None
    size_bytes: int | None = None
    documents: list[dict[str, Any]] | None = None
    refresh_every: str | None = None


class Draft(ApiModel):
    id: str
    name: str
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    sources: list[DraftSource] = Field(default_factory=list)
    expires_at: datetime | None = None


class PreviewChunk(ApiModel):
    text: str
    token_count: int
    metadata: dict[str, Any] = Field(default_factory=dict)


class Preview(ApiModel):
    source_id: str | None = None
    title: str | None = None
    total_chunks: int | None = None
    chunks: list[PreviewChunk]


class Validation(ApiModel):
    is_valid: bool
    errors: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[dict[str, Any]] = Field(default_factory=list)
    estimated_duration_minutes: float | None = None


class Finalized(ApiModel):
    kb_id: str
    pipeline_id: str
    status: str
    tracking_url: str | None = None
    estimated_completion_minutes: float | None = None


class KbCounts(ApiModel):
    documents: int = 0
    indexed: int = 0
    failed: int = 0
    chunks: int = 0


class KnowledgeBase(ApiModel):
    id: str
    name: str
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    version: int | None = None
    status: str
    error: str | None = None
    latest_pipeline_id: str | None = None
    counts: KbCounts = Field(default_factory=KbCounts)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class KbChange(ApiModel):
    """``PATCH /kbs/{id}``: the KB itself (``kb``, nothing of the index changed) or the version
    that now builds beside the live one (``version``, ``pipeline_id``)."""

    kb: KnowledgeBase | None = None
    version: int | None = None
    pipeline_id: str | None = None


class Document(ApiModel):
    id: str
    kb_id: str | None = None
    external_id: str | None = None
    source_type: str | None = None
    source_url: str | None = None
    filename: str | None = None
    title: str | None = None
    status: str
    error: str | None = None
    error_kind: str | None = None
    chunk_count: int | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Chunk(ApiModel):
    id: str
    document_id: str
    chunk_index: int
    text: str
    token_count: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentOutcome(ApiModel):
    """One item of an added batch: its document and what happens to it (``pending``, ``skipped``)."""

    id: str
    external_id: str | None = None
    filename: str | None = None
    status: str


class DocumentsAdded(ApiModel):
    pipeline_id: str
    documents: list[DocumentOutcome] = Field(default_factory=list)


class SourceAdded(ApiModel):
    pipeline_id: str
    source: dict[str, Any] = Field(default_factory=dict)


class WebSourceInfo(ApiModel):
    """A KB's web source (``GET /kbs/{id}/sources``) with its schedule."""

    id: str
    type: str = "web"
    url: str | None = None
    crawl: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    refresh_every: str | None = None
    next_refresh_at: datetime | None = None


class PipelineStarted(ApiModel):
    pipeline_id: str


class PipelineCounts(ApiModel):
    pages_discovered: int = 0
    pages_fetched: int = 0
    pages_skipped: int = 0
    documents_total: int = 0
    documents_done: int = 0
    documents_failed: int = 0
    chunks_created: int = 0
    chunks_embedded: int = 0
    chunks_indexed: int = 0


class Pipeline(ApiModel):
    id: str
    kb_id: str
    kind: str | None = None
    status: str
    phase: str | None = None
    progress: float = 0
    counts: PipelineCounts = Field(default_factory=PipelineCounts)
    message: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: a scheduled start: none of its jobs runs before then
    not_before: datetime | None = None
    eta_seconds: float | None = None

    @property
    def is_over(self) -> bool:
        return self.status in PIPELINE_FINAL


#: a pipeline in one of these states does no more work (``db/states.py`` is the server's home)
PIPELINE_FINAL = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})


class Event(ApiModel):
    """One Server-Sent Event of ``GET /pipelines/{id}/events``: ``pipeline`` (``data`` is the
    pipeline), ``document`` (one document's transition) or ``end`` (the final state)."""

    id: int
    event: str
    data: dict[str, Any] = Field(default_factory=dict)


class SearchResult(ApiModel):
    chunk_id: str
    document_id: str
    external_id: str | None = None
    title: str | None = None
    url: str | None = None
    filename: str | None = None
    section: list[str] = Field(default_factory=list)
    text: str
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(ApiModel):
    query_id: str
    query: str | None = None
    version: int | None = None
    mode: str | None = None
    latency_ms: float | None = None
    results: list[SearchResult]


class Feedback(ApiModel):
    query_id: str
    feedback: str
    comment: str | None = None


class Job(ApiModel):
    id: str
    type: str
    status: str
    pipeline_id: str | None = None
    kb_id: str | None = None
    document_id: str | None = None
    attempts: int = 0
    max_attempts: int = 0
    last_error: str | None = None
    error_kind: str | None = None
    created_at: datetime | None = None


class QueueStats(ApiModel):
    pending: int
    running: int
    failed: int
    dead: int
    active_workers: int
    avg_processing_seconds: float | None = None
    error_rate: float | None = None
    throughput_per_hour: int | None = None


class WorkspaceInfo(ApiModel):
    """``GET/PATCH /api/v1/workspace``: the tier and the retention (days; None: the default)."""

    id: str
    name: str
    priority: int = 0
    pool: str | None = None
    retention: dict[str, float | None] = Field(default_factory=dict)


class ApiKey(ApiModel):
    id: str
    prefix: str
    name: str | None = None
    scopes: list[str] = Field(default_factory=list)
    state: str | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    #: the secret: only in the answer that created the key
    key: str | None = None


class KbVersion(ApiModel):
    version: int
    config: dict[str, Any] = Field(default_factory=dict)
    status: str
    counts: dict[str, Any] = Field(default_factory=dict)
    pipeline_id: str | None = None
    message: str | None = None
    created_at: datetime | None = None
    activated_at: datetime | None = None
    evaluation: dict[str, Any] | None = None


class EvaluationStarted(ApiModel):
    evaluation_id: str


class Evaluation(ApiModel):
    id: str
    kb_id: str
    status: str
    #: ``{"<version>": {"<mode>": {"ndcg@10", "recall@10", "recall@100", "mrr@10"}}}``
    results: dict[str, Any] | None = None
    per_query: Any = None
    error: str | None = None
