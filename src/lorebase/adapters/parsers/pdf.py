"""PDF layout, page by page: headings, paragraphs, two columns and tables, without running headers.

**Two engines.** pypdfium2 (PDFium, the engine inside Chrome) reads the metadata and tells, per
page, whether there is a text layer at all: it is fast (~3 ms a page) and robust on damaged
files, so a 10,000-page PDF of nothing fails with "no extractable text" in seconds. pdfplumber
(pdfminer.six) then reads the pages that have text, for what PDFium's text API does not give
cheaply: words with font size and name, and a table finder. It is the slow part, measured on a
generated 50-page PDF (text, a heading and a ruled table per page): pdfplumber words + tables
2.3 s (~20 pages/s), PDFium's per-character boxes 0.17 s (~300 pages/s); PDFium would need our
own word grouping, font queries through the raw API and a table finder, so pdfplumber is used
and ``benchmarks/pdf_pages.py`` keeps the figure honest (1,000 pages ≈ 50 s of CPU on the
2-core machines, near ``parse.max_cpu_seconds``). Layout rules live in :mod:`.pdf_layout`.

PDFium is not thread-safe, not even across different documents, so every call into it is
serialized by a process-wide lock.

**Bounded memory.** One page at a time is opened, read and closed (``page.close()`` drops
pdfplumber's per-page caches); what is kept across pages is the blocks' text and, for margin
lines, a key to find running headers and footers: lines repeated at the same place on at least
half the pages (and on two or more) are dropped at the end.

**Pages without a text layer** (scans) go through :meth:`PdfParser._page_without_text`, the one
place where OCR plugs in; today it yields nothing, and a PDF with no text on any page fails with
"no extractable text" instead of silently producing an empty document.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from typing import Any

import pdfplumber
import pypdfium2 as pdfium
from pdfminer.pdfexceptions import PDFException, PSException
from pdfplumber.utils.exceptions import MalformedPDFException, PdfminerException

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.adapters.parsers.pdf_layout import JUNK, PageBlock, page_blocks
from lorebase.adapters.parsers.tables import TableStats, current_max_rows
from lorebase.errors import PermanentError

_PDFIUM_LOCK = threading.Lock()


def _reason(exc: Exception) -> str:
    message = str(exc).strip() or type(exc).__name__
    if "password" in message.lower():
        return "the file is password-protected"
    return message


class PdfParser:
    """``application/pdf``: heading, paragraph and table blocks with 1-based ``page``; title from the metadata."""

    media_types: tuple[str, ...] = ("application/pdf",)

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        with _PDFIUM_LOCK:
            title, has_text = self._survey(data)
        if not any(has_text):
            raise PermanentError(
                f"no extractable text: the PDF has {len(has_text)} page(s) but no text layer "
                "(a scanned document? OCR is not supported)"
            )
        stats = TableStats(max_rows=current_max_rows())
        pages = self._layout(data, has_text, stats)
        blocks = _drop_running_lines(pages)
        if not blocks:
            raise PermanentError(
                f"no extractable text: the PDF has {len(has_text)} page(s) but no text layer "
                "(a scanned document? OCR is not supported)"
            )
        metadata: dict[str, Any] = {}
        if warnings := stats.warnings():
            metadata["warnings"] = warnings
        return ParsedDocument(title=title, blocks=blocks, page_count=len(has_text), metadata=metadata)

    def _page_without_text(self, number: int) -> list[PageBlock]:
        """Blocks for page ``number`` (1-based), which has no text layer: none until OCR."""
        return []

    def _survey(self, data: bytes) -> tuple[str | None, list[bool]]:
        """The title and, per page, whether it has any text (PDFium, one page open at a time)."""
        try:
            doc = pdfium.PdfDocument(data)
        except (pdfium.PdfiumError, ValueError, TypeError) as exc:
            raise PermanentError(f"could not read PDF: {_reason(exc)}") from exc
        try:
            title = JUNK.sub("", doc.get_metadata_dict().get("Title") or "").strip() or None
            has_text: list[bool] = []
            for index in range(len(doc)):
                page = doc[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        has_text.append(bool(textpage.get_text_range().strip()))
                    finally:
                        textpage.close()
                finally:
                    page.close()
            return title, has_text
        except (pdfium.PdfiumError, ValueError, UnicodeError) as exc:
            raise PermanentError(f"could not read PDF: {_reason(exc)}") from exc
        finally:
            doc.close()

    def _layout(self, data: bytes, has_text: list[bool], stats: TableStats) -> list[list[PageBlock]]:
        pages: list[list[PageBlock]] = []
        try:
            with pdfplumber.open(io.BytesIO(data)) as pdf:
                for index, page in enumerate(pdf.pages):
                    number = index + 1
                    if index >= len(has_text) or not has_text[index]:
                        pages.append(self._page_without_text(number))
                        continue
                    try:
                        pages.append(page_blocks(page, number, stats))
                    finally:
                        page.close()
        except (
            PdfminerException,
            MalformedPDFException,
            PDFException,
            PSException,
            ValueError,
            KeyError,
            TypeError,
            AssertionError,  # pdfminer asserts on some malformed streams
        ) as exc:
            raise PermanentError(f"could not read PDF: {_reason(exc)}") from exc
        return pages


def _drop_running_lines(pages: list[list[PageBlock]]) -> list[Block]:
    """All pages' blocks without margin lines repeated on at least half the pages (two or more)."""
    counts: Counter[str] = Counter()
    for blocks in pages:
        counts.update({b.margin_key for b in blocks if b.margin_key is not None})
    with_text = sum(1 for blocks in pages if blocks)
    threshold = max(2, (with_text + 1) // 2)
    return [
        b.block
        for blocks in pages
        for b in blocks
        if b.margin_key is None or counts[b.margin_key] < threshold
    ]
