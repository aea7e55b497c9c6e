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

**Pages without a text layer.** A page with no text but with an image (a scan) is rendered and
OCR'd (``ocr.py``; :func:`_with_ocr`, kept apart from the text-layer path) and its blocks join the
others in page order; a page with neither is empty and skipped. With OCR off a scanned PDF fails
with "no text layer; OCR is off", and a PDF with no text and no image anywhere fails with "no
extractable text", instead of silently producing an empty document.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from typing import Any

import pdfplumber
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from pdfminer.pdfexceptions import PDFException, PSException
from pdfplumber.utils.exceptions import MalformedPDFException, PdfminerException

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.adapters.parsers.pdf_layout import JUNK, PageBlock, page_blocks
from lorebase.adapters.parsers.tables import TableStats, current_max_rows
from lorebase.errors import PermanentError

from . import ocr

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
            title, has_text, has_image = self._survey(data)
        page_count = len(has_text)
        # OCR candidates: pages with no text layer but an image (a scan); pages with neither are empty
        scanned = [
            n
            for n, (text, image) in enumerate(zip(has_text, has_image, strict=True), start=1)
            if image and not text
        ]
        if not any(has_text) and not scanned:
            raise PermanentError(
                f"no extractable text: the PDF has {page_count} page(s) but no text layer and no image"
            )
        blocks: list[Block] = []
        metadata: dict[str, Any] = {}
        if any(has_text):
            stats = TableStats(max_rows=current_max_rows())
            blocks = _drop_running_lines(self._layout(data, has_text, stats))
            if warnings := stats.warnings():
                metadata["warnings"] = warnings
        if scanned or not blocks:
            blocks, read = _with_ocr(data, blocks, scanned, page_count)
            metadata = {
                **metadata,
                **read,
                "warnings": metadata.get("warnings", []) + read.get("warnings", []),
            }
            if not metadata["warnings"]:
                del metadata["warnings"]
        return ParsedDocument(title=title, blocks=blocks, page_count=page_count, metadata=metadata)

    def _survey(self, data: bytes) -> tuple[str | None, list[bool], list[bool]]:
        """The title and, per page, whether it has any text and, for a page without, whether it
        has an image (PDFium, one page open at a time)."""
        try:
            doc = pdfium.PdfDocument(data)
        except (pdfium.PdfiumError, ValueError, TypeError) as exc:
            raise PermanentError(f"could not read PDF: {_reason(exc)}") from exc
        try:
            title = JUNK.sub("", doc.get_metadata_dict().get("Title") or "").strip() or None
            has_text: list[bool] = []
            has_image: list[bool] = []
            for index in range(len(doc)):
                page = doc[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        has_text.append(bool(textpage.get_text_range().strip()))
                    finally:
                        textpage.close()
                    has_image.append(not has_text[-1] and _has_image(page))
                finally:
                    page.close()
            return title, has_text, has_image
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
                        pages.append([])  # no text layer: OCR'd apart (_with_ocr), or empty
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


def _has_image(page: Any) -> bool:
    """Whether a page draws an image (at any depth of form objects): a scan to OCR."""
    return next(iter(page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,))), None) is not None


def _drop_running_lines(pages: list[list[PageBlock]]) -> list[Block]:
    """All pages' blocks without margin lines repeated on at least half the pages (two or more).
    A page's only block is its content, never its running header (a one-line page)."""
    counts: Counter[str] = Counter()
    for blocks in pages:
        if len(blocks) > 1:
            counts.update({b.margin_key for b in blocks if b.margin_key is not None})
    with_text = sum(1 for blocks in pages if blocks)
    threshold = max(2, (with_text + 1) // 2)
    return [
        b.block
        for blocks in pages
        for b in blocks
        if b.margin_key is None or len(blocks) == 1 or counts[b.margin_key] < threshold
    ]


# --- pages without a text layer: OCR (kept in one place, apart from the text-layer path) ---


def _with_ocr(
    data: bytes, blocks: list[Block], blank: list[int], page_count: int
) -> tuple[list[Block], dict[str, Any]]:
    """``blocks`` plus the OCR'd text of the ``blank`` pages (1-based) in page order, and the
    document's metadata (``warnings`` for pages OCR read with a low confidence)."""
    if not blank:  # no page at all
        raise PermanentError(f"no extractable text: the PDF has {page_count} page(s)")
    cfg = ocr.limits()
    if not cfg.enabled:
        if blocks:
            return blocks, {
                "warnings": [f"page(s) {_pages(blank)} have no text layer; OCR is off: not indexed"]
            }
        raise PermanentError(
            f"no extractable text: the PDF has {page_count} page(s) and no text layer; OCR is off "
            "(LOREBASE_PARSE__OCR=false), so a scanned document cannot be indexed"
        )
    ocr.require_tesseract()
    if len(blank) > cfg.max_pages:
        raise PermanentError(
            f"the PDF has {len(blank)} pages without a text layer, more than the {cfg.max_pages} "
            "OCR accepts (parse.ocr_max_pages)"
        )
    read: list[Block] = []
    warnings: list[str] = []
    for number in blank:
        with _PDFIUM_LOCK:
            image = _render(data, number)
        found, low = ocr.ocr_pages([(number, image)])
        read += found
        warnings += low
    merged = sorted(blocks + read, key=lambda b: b.page or 0)  # stable: each page keeps its order
    if not merged:
        raise PermanentError(f"no extractable text: the PDF has {page_count} page(s); OCR found no text")
    return merged, {"ocr": True, **({"warnings": warnings} if warnings else {})}


def _pages(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:20])) + (", ..." if len(numbers) > 20 else "")


def _render(data: bytes, number: int) -> Any:
    """Page ``number`` as a grayscale PIL image at ``ocr_dpi`` (lower if it would pass ``ocr_max_pixels``)."""
    try:
        doc = pdfium.PdfDocument(data)
    except (pdfium.PdfiumError, ValueError, TypeError) as exc:
        raise PermanentError(f"could not read PDF: {_reason(exc)}") from exc
    try:
        page = doc[number - 1]
        try:
            width, height = page.get_size()
            bitmap = page.render(scale=ocr.render_scale(width, height), grayscale=True)
            return bitmap.to_pil().copy()  # its own pixels: the bitmap goes with the document
        finally:
            page.close()
    except pdfium.PdfiumError as exc:
        raise PermanentError(f"could not render PDF page {number} for OCR: {_reason(exc)}") from exc
    finally:
        doc.close()
