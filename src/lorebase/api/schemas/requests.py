"""Request bodies. Responses are plain dicts shaped by the services (documented in DESIGN.md §7)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DraftCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    config: dict[str, Any] | None = None


class DraftPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    config: dict[str, Any] | None = None


class TextRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: str | None = Field(None, max_length=500)
    title: str | None = Field(None, max_length=1000)
    text: str = Field(min_length=1)
    metadata: dict[str, Any] | None = None


class TextSource(BaseModel):
    type: Literal["text"]
    documents: list[TextRecord] = Field(min_length=1, max_length=10_000)


class WebSource(BaseModel):
    type: Literal["web"]
    url: str
    crawl: dict[str, Any] | None = None


class DocumentsBatch(BaseModel):
    documents: list[TextRecord] = Field(min_length=1, max_length=10_000)


class PreviewRequest(BaseModel):
    source_id: str | None = None
    limit: int = Field(10, ge=1, le=200)


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(10, ge=1, le=100)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"
    filters: dict[str, Any] | None = None


class FeedbackRequest(BaseModel):
    feedback: Literal["positive", "negative", "neutral"]
    comment: str | None = Field(None, max_length=10_000)
