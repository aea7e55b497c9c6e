"""Typed values that flow between pipeline stages (parse -> chunk -> embed -> index).

Stages are plain functions over these values; none of them knows about HTTP, the queue
or database sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

BlockKind = Literal["heading", "paragraph", "list", "table", "code"]


@dataclass(slots=True)
class Block:
    """One structural unit of a parsed document, in reading order.

    ``text`` is plain text with light markdown conventions: list items start with "- " or
    "1. ", table rows are "a | b | c" lines, code keeps its line breaks. ``level`` is the
    heading level (1-6) for headings and 0 otherwise. ``page`` is 1-based for paged formats.
    ``anchor`` is the element id of a heading when the source has one (HTML).
    """

    kind: BlockKind
    text: str
    level: int = 0
    page: int | None = None
    anchor: str | None = None


@dataclass(slots=True)
class ParsedDocument:
    """What a parser returns: a title (may be None) and blocks in reading order."""

    title: str | None
    blocks: list[Block]
    page_count: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


@dataclass(slots=True)
class ChunkingConfig:
    """How to cut a document into chunks; sizes are in the embedding model's tokens."""

    strategy: Literal["recursive", "structure"] = "recursive"
    chunk_size: int = 200
    chunk_overlap: int = 20


@dataclass(slots=True)
class ChunkDraft:
    """A chunk before it is saved: text, its token count and metadata.

    metadata keys: ``section`` (list of heading texts, outermost first), ``page`` (first page,
    1-based) and ``pages`` (all pages spanned) for paged formats, ``anchor`` of the nearest heading.
    """

    text: str
    token_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
