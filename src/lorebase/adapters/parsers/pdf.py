"""PDF text, page by page, with pypdfium2 (PDFium, the engine inside Chrome).

PDFium is fast, robust on damaged files and has no GPL strings attached. It is not
thread-safe, not even across different documents, so every call into it is serialized by a
process-wide lock; parsing is short next to embedding, so the lock costs little.

PDF has no paragraphs, only positioned lines; blank lines in the extracted text are the only
cheap, reliable paragraph signal, so blocks are split there and otherwise keep their line
breaks. A page without a text layer (a scan) is rendered and OCR'd (``ocr.py``); with OCR off
a PDF without any text fails with "no text layer; OCR is off" instead of silently producing
an empty document.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pypdfium2 as pdfium

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError

from . import ocr
from .text import split_paragraphs

_PDFIUM_LOCK = threading.Lock()
#: control characters PDFium emits for soft hyphens and unmapped glyphs (keeps \t and \n)
_JUNK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_SPACES = re.compile(r"[ \t\u00a0]+")


def _clean(text: str) -> str:
    text = _JUNK.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))


def _reason(exc: Exception) -> str:
    message = str(exc).strip() or type(exc).__name__
    if "password" in message.lower():
        return "the file is password-protected"
    return message


class PdfParser:
    """``application/pdf``: paragraph blocks with 1-based ``page``; title from the metadata."""

    media_types: tuple[str, ...] = ("application/pdf",)

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        with _PDFIUM_LOCK:
            title, pages = self._extract(data)
        blocks = [
            Block(kind="paragraph", text=para, page=number)
            for number, text in enumerate(pages, start=1)
            for para in split_paragraphs(text)
        ]
        blank = [number for number, text in enumerate(pages, start=1) if not text.strip()]
        metadata: dict[str, Any] = {}
        if blank or not blocks:
            blocks, metadata = _with_ocr(data, blocks, blank, len(pages))
        return ParsedDocument(title=title, blocks=blocks, page_count=len(pages), metadata=metadata)

    def _extract(self, data: bytes) -> tuple[str | None, list[str]]:
        try:
            doc = pdfium.PdfDocument(data)
        except (pdfium.PdfiumError, ValueError, TypeError) as exc:
            raise PermanentError(f"could not read PDF: {_reason(exc)}") from exc
        try:
            title = (doc.get_metadata_dict().get("Title") or "").strip() or None
            pages: list[str] = []
            for index in range(len(doc)):
                page = doc[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        pages.append(_clean(textpage.get_text_bounded()))
                    finally:
                        textpage.close()
                finally:
                    page.close()
            return title, pages
        except (pdfium.PdfiumError, ValueError, UnicodeError) as exc:
            raise PermanentError(f"could not read PDF: {_reason(exc)}") from exc
        finally:
            doc.close()


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
