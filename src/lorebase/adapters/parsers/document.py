"""What a parser returns: a document's title and its structural blocks in reading order.

The parsers (this package) make these; the chunk stage (``pipeline/chunk.py``) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

BlockKind = Literal["heading", "paragraph", "list", "table", "code", "ocr"]


@dataclass(slots=True)
class Block:
    """One structural unit of a parsed document, in reading order.

    ``text`` is plain text with light markdown conventions: list items start with "- " or
    "1. ", table rows are "a | b | c" lines, code keeps its line breaks. ``level`` is the
    heading level (1-6) for headings and 0 otherwise. ``page`` is 1-based for paged formats.
    ``anchor`` is the element id of a heading when the source has one (HTML). ``header_rows``
    is the number of leading lines of a table block that are its header row(s) (spreadsheets
    and CSV: 1; 0 when unknown): the chunk stage repeats them at the top of every part when it
    has to cut the table. An ``ocr`` block is a paragraph read by OCR from an image or a
    scanned page; ``confidence`` is the mean word confidence (0-100) of its page.
    """

    kind: BlockKind
    text: str
    level: int = 0
    page: int | None = None
    anchor: str | None = None
    header_rows: int = 0
    confidence: float | None = None


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
