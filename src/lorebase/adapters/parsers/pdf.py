"""PDF text, page by page, with pypdfium2 (PDFium, the engine inside Chrome).

PDFium is fast, robust on damaged files and has no GPL strings attached. It is not
thread-safe, not even across different documents, so every call into it is serialized by a
process-wide lock; parsing is short next to embedding, so the lock costs little.

PDF has no paragraphs, only positioned lines; blank lines in the extracted text are the only
cheap, reliable paragraph signal, so blocks are split there and otherwise keep their line
breaks. Scanned PDFs (images only) have no text layer and fail with "no extractable text"
instead of silently producing an empty document.
"""

from __future__ import annotations

import re
import threading

import pypdfium2 as pdfium

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError

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
        if not blocks:
            raise PermanentError(
                f"no extractable text: the PDF has {len(pages)} page(s) but no text layer "
                "(a scanned document? OCR is not supported)"
            )
        return ParsedDocument(title=title, blocks=blocks, page_count=len(pages))

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
