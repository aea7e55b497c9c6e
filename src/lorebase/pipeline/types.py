"""Typed values that flow between pipeline stages (parse -> chunk -> embed -> index); what a
parser returns (``ParsedDocument``, ``Block``) is ``adapters/parsers/document.py``.

Stages are plain functions over these values; none of them knows about HTTP, the queue
or database sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(slots=True)
class ChunkingConfig:
    """How to cut a document into chunks; sizes are in the embedding model's tokens."""

    strategy: Literal["recursive", "structure"] = "recursive"
    chunk_size: int = 200
    chunk_overlap: int = 20

    @classmethod
    def of(cls, kb_config: dict[str, Any]) -> ChunkingConfig:
        """The chunking of a KB's (validated) config."""
        c = kb_config["chunking"]
        return cls(strategy=c["strategy"], chunk_size=c["chunk_size"], chunk_overlap=c["chunk_overlap"])


@dataclass(slots=True)
class ChunkDraft:
    """A chunk before it is saved: text, its token count and metadata.

    metadata keys: ``section`` (list of heading texts, outermost first), ``page`` (first page,
    1-based) and ``pages`` (all pages spanned) for paged formats, ``anchor`` of the nearest heading,
    ``type`` (``text``, ``table`` or ``code``; see ``chunk.py``).
    """

    text: str
    token_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
