"""Request bodies. Responses are plain dicts shaped by the services (documented in DESIGN.md §7).

Every body is a ``StorableModel``: a string anywhere in it (a field, a metadata key or value, a
config entry) must be one that PostgreSQL and SQLite can store, so no NUL character (PostgreSQL
text and JSON cannot hold one) and no lone surrogate (``"\\ud800"`` is valid JSON but not
encodable as UTF-8). Such a body answers 422 instead of crashing the insert with a 500. A text
record's ``text`` is exempt: it goes to the pipeline as a file's content would, and the text
parser drops control characters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


def unstorable(value: Any) -> str | None:
    """Why ``value`` (a JSON value) cannot be stored, or None. Iterative: nesting depth is free."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return f"{path or 'a string'}: NUL characters are not allowed"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return f"{path or 'a string'}: not valid Unicode (a lone surrogate)"
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((path, key))
                stack.append((f"{path}.{key}" if path else str(key), child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


class StorableModel(BaseModel):
    """A request body whose strings can all be stored (nested models check their own)."""

    #: fields that are content for the pipeline, which cleans control characters out of the text
    #: it extracts (as from any uploaded file), rather than values stored as they are
    pipeline_content: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _storable(self) -> Self:
        for name in type(self).model_fields:
            if name in self.pipeline_content:
                continue
            value = getattr(self, name)
            if isinstance(value, list) and value and isinstance(value[0], BaseModel):
                continue  # a list of models (validated by themselves)
            if (problem := unstorable({name: value})) is not None:
                raise ValueError(problem)
        return self


class DraftCreate(StorableModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    config: dict[str, Any] | None = None


class DraftPatch(StorableModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    config: dict[str, Any] | None = None


class TextRecord(StorableModel):
    model_config = ConfigDict(extra="forbid")
    pipeline_content: ClassVar[frozenset[str]] = frozenset({"text"})
    external_id: str | None = Field(None, max_length=500)
    title: str | None = Field(None, max_length=1000)
    text: str = Field(min_length=1)
    metadata: dict[str, Any] | None = None


class TextSource(StorableModel):
    type: Literal["text"]
    documents: list[TextRecord] = Field(min_length=1, max_length=10_000)


class WebSource(StorableModel):
    type: Literal["web"]
    url: str
    crawl: dict[str, Any] | None = None
    refresh_every: str | None = Field(
        None,
        max_length=12,
        description="Refresh the source on a schedule: digits and a unit s, m, h or d ('24h'), at "
        "least LOREBASE_SCHEDULER__REFRESH_SECONDS.",
    )


_NOT_BEFORE = (
    "Start the pipeline's work no earlier than this (ISO 8601 with a timezone); a past time starts "
    "now. Also accepted as the query parameter `not_before`."
)


class DocumentsBatch(StorableModel):
    documents: list[TextRecord] = Field(min_length=1, max_length=10_000)
    not_before: datetime | None = Field(None, description=_NOT_BEFORE)


class KbWebSource(WebSource):
    """A web source added to a built KB: it may wait for a start time."""

    not_before: datetime | None = Field(None, description=_NOT_BEFORE)


class StartAt(StorableModel):
    """The optional body of finalize and refresh."""

    not_before: datetime | None = Field(None, description=_NOT_BEFORE)


class PreviewRequest(StorableModel):
    source_id: str | None = None
    limit: int = Field(10, ge=1, le=200)


class SearchRequest(StorableModel):
    query: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(10, ge=1, le=100)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"
    filters: dict[str, Any] | None = None
    #: a complete or retired config version to search instead of the live one
    version: int | None = Field(None, ge=1)


class KbPatch(StorableModel):
    """``PATCH /kbs/{id}``: a config change that touches the index builds a new version."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    config: dict[str, Any] | None = None
    activate: Literal["always", "if_better", "manual"] = "always"
    #: for ``activate: "if_better"``: ``{queries, qrels}`` or ``{from_feedback: true}``
    evaluation: dict[str, Any] | None = None


class FeedbackRequest(StorableModel):
    feedback: Literal["positive", "negative", "neutral"]
    comment: str | None = Field(None, max_length=10_000)


class EvaluationQuery(StorableModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=500)
    text: str = Field(min_length=1, max_length=4000)


class EvaluationRequest(StorableModel):
    """``queries`` + ``qrels`` (``{query_id: {external_id: grade}}``), or ``from_feedback: true``.
    What they may hold (counts, known ids and modes, searchable versions) is checked by
    ``services/evaluations.py``, the same rules for every caller."""

    model_config = ConfigDict(extra="forbid")
    queries: list[EvaluationQuery] | None = None
    qrels: dict[str, dict[str, int]] | None = None
    from_feedback: bool = False
    versions: list[int] | None = None
    modes: list[str] | None = None
