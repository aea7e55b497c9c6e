"""Which parser handles a file, decided from its bytes first and its name or label second.

Magic bytes win because names and declared content types lie (``report.pdf`` saved from a
browser as HTML, ``application/octet-stream`` on everything). The extension still decides for
PDF and DOCX when the magic is missing, so that a damaged ``.pdf`` reaches the PDF parser and
fails with "could not read PDF: ..." rather than a vague "unsupported file type". Binary junk
(NUL bytes without a known signature) is refused up front instead of being indexed as text.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath

from lorebase.errors import UnsupportedMediaType
from lorebase.pipeline.types import ParsedDocument

from .docx import DOCX_MEDIA_TYPE, DocxParser
from .html import HtmlParser
from .markdown import MarkdownParser
from .pdf import PdfParser
from .protocol import Parser
from .text import TextParser

PLAIN = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = DOCX_MEDIA_TYPE

SUPPORTED_MEDIA_TYPES: tuple[str, ...] = (PLAIN, MARKDOWN, HTML, PDF, DOCX)

_PARSERS: dict[str, Parser] = {
    PLAIN: TextParser(),
    MARKDOWN: MarkdownParser(),
    HTML: HtmlParser(),
    PDF: PdfParser(),
    DOCX: DocxParser(),
}

_EXTENSIONS = {
    ".txt": PLAIN,
    ".text": PLAIN,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".mkd": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".pdf": PDF,
    ".docx": DOCX,
}

#: declared content types (and common aliases) we accept, mapped to the canonical one
_DECLARED = {
    PLAIN: PLAIN,
    MARKDOWN: MARKDOWN,
    "text/x-markdown": MARKDOWN,
    HTML: HTML,
    "application/xhtml+xml": HTML,
    PDF: PDF,
    "application/x-pdf": PDF,
    DOCX: DOCX,
}

#: well-known binary signatures, for a clearer refusal than "binary data"
_KNOWN_BINARY = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Office document (.doc/.xls/.ppt); save it as .docx"),
    (b"\x7fELF", "executable (ELF)"),
    (b"MZ", "Windows executable"),
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"\x1f\x8b", "gzip archive"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
)

_SNIFF_BYTES = 8192
_HTML_SNIFF = re.compile(
    r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b"
    r"|<(?:html|head|body)\b[^>]*>",
    re.I | re.S,
)
_HTML_START = re.compile(r"^\s*<(?:div|p|h[1-6]|table|article|section|main|ul|ol|meta|title|link)\b", re.I)


def _zip_media_type(data: bytes) -> str:
    """A zip is DOCX only if it has ``word/document.xml`` (reads the central directory only)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError):
        # A damaged zip: trust a .docx name later, else refuse.
        return ""
    if "word/document.xml" in names:
        return DOCX
    raise UnsupportedMediaType("unsupported file type: a zip archive that is not a Word (.docx) document")


def _looks_binary(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NULs but a BOM
        return False
    return b"\x00" in head


def _sniff_text(head: bytes) -> str:
    sample = head.decode("utf-8", errors="replace")
    if _HTML_SNIFF.search(sample[:2048]) or _HTML_START.match(sample):
        return HTML
    return PLAIN


def detect_media_type(data: bytes, filename: str | None, declared: str | None = None) -> str:
    """The canonical media type to parse ``data`` as, or :class:`UnsupportedMediaType`.

    Order: magic bytes, file extension, declared content type, content sniffing.
    """
    head = data[:_SNIFF_BYTES]
    zipped = ""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        zipped = _zip_media_type(data)
        if zipped:
            return zipped
    suffix = PurePosixPath((filename or "").replace("\\", "/")).suffix.lower()
    by_name = _EXTENSIONS.get(suffix)
    if by_name in (PDF, DOCX):
        return by_name  # wrong or damaged content fails at parse with a format-specific message
    for magic, what in _KNOWN_BINARY:
        if head.startswith(magic) and (magic != b"MZ" or _looks_binary(head)):
            raise UnsupportedMediaType(f"unsupported file type: {what}")
    if head.startswith(b"PK\x03\x04"):
        raise UnsupportedMediaType("unsupported file type: a damaged or unknown zip archive")
    if _looks_binary(head):
        name = f" ({filename})" if filename else ""
        raise UnsupportedMediaType(f"unsupported file type{name}: binary data that is not PDF, DOCX or text")
    if by_name:
        return by_name
    base = (declared or "").split(";", 1)[0].strip().lower()
    if base in _DECLARED:
        return _DECLARED[base]
    return _sniff_text(head)


def parser_for(media_type: str) -> Parser:
    """The shared parser instance for a canonical (or aliased) media type."""
    canonical = _DECLARED.get(media_type.split(";", 1)[0].strip().lower())
    if canonical is None:
        raise UnsupportedMediaType(f"unsupported file type: {media_type}")
    return _PARSERS[canonical]


def parse_bytes(data: bytes, media_type: str, filename: str | None = None) -> ParsedDocument:
    """Parse ``data`` with the parser for ``media_type`` (see :func:`detect_media_type`)."""
    return parser_for(media_type).parse(data, filename=filename)
