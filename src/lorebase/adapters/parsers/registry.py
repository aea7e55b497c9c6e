"""Which parser handles a file, decided from its bytes first and its name or label second.

Magic bytes win because names and declared content types lie (``report.pdf`` saved from a
browser as HTML, ``application/octet-stream`` on everything). The extension still decides for
PDF and DOCX when the magic is missing, so that a damaged ``.pdf`` reaches the PDF parser and
fails with "could not read PDF: ..." rather than a vague "unsupported file type" — unless the
content has a known binary signature (an ELF executable named ``x.pdf``), which is refused up
front. Binary junk (NUL bytes without a known signature) is refused instead of being indexed as
text. A DOCX's zip directory is inspected before it is accepted (``zipguard``): a zip bomb is
refused with :class:`~lorebase.errors.PayloadTooLarge`, before anything is stored.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath

from lorebase.adapters.parsers.document import ParsedDocument
from lorebase.errors import PayloadTooLarge, UnsupportedMediaType
from lorebase.settings import ParseSettings

from .docx import DOCX_MEDIA_TYPE, DocxParser
from .html import HtmlParser
from .markdown import MarkdownParser
from .pdf import PdfParser
from .protocol import Parser
from .text import TextParser
from .zipguard import DEFAULT_LIMITS, ZipLimits, ZipRefused, check_archive

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


def _zip_media_type(data: bytes, limits: ZipLimits | None = DEFAULT_LIMITS) -> str:
    """A zip is DOCX only if it has ``word/document.xml`` (reads the central directory only).

    With ``limits``, a DOCX whose directory is that of a zip bomb is refused (413)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            if "word/document.xml" in names and limits is not None:
                check_archive(archive, limits)
    except ZipRefused as exc:
        raise PayloadTooLarge(str(exc)) from None
    except (zipfile.BadZipFile, ValueError, OSError):
        # A damaged zip: trust a .docx name later, else refuse.
        return ""
    if "word/document.xml" in names:
        return DOCX
    raise UnsupportedMediaType("unsupported file type: a zip archive that is not a Word (.docx) document")


def _article(what: str) -> str:
    return ("an " if what[0].lower() in "aeiou" else "a ") + what


def _looks_binary(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NULs but a BOM
        return False
    return b"\x00" in head


def _sniff_text(head: bytes) -> str:
    sample = head.decode("utf-8", errors="replace")
    if _HTML_SNIFF.search(sample[:2048]) or _HTML_START.match(sample):
        return HTML
    return PLAIN


def _binary_signature(head: bytes) -> str | None:
    for magic, what in _KNOWN_BINARY:
        if head.startswith(magic) and (magic != b"MZ" or _looks_binary(head)):
            return what
    return None


def detect_media_type(
    data: bytes,
    filename: str | None,
    declared: str | None = None,
    *,
    limits: ParseSettings | ZipLimits | None = DEFAULT_LIMITS,
) -> str:
    """The canonical media type to parse ``data`` as, or :class:`UnsupportedMediaType`.

    Order: magic bytes, file extension, declared content type, content sniffing. A DOCX is
    checked against ``limits`` (the ``parse`` settings or :class:`ZipLimits`: entries, declared
    size, compression ratio) and refused with :class:`PayloadTooLarge`; ``None`` skips the check
    (the DOCX parser repeats it anyway).
    """
    head = data[:_SNIFF_BYTES]
    zipped = ""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        zip_limits = ZipLimits.of(limits) if isinstance(limits, ParseSettings) else limits
        zipped = _zip_media_type(data, zip_limits)
        if zipped:
            return zipped
    suffix = PurePosixPath((filename or "").replace("\\", "/")).suffix.lower()
    by_name = _EXTENSIONS.get(suffix)
    signature = _binary_signature(head)
    if by_name in (PDF, DOCX):
        if signature is not None:  # an executable or an image named .pdf is not a damaged PDF
            raise UnsupportedMediaType(
                f"unsupported file type: the file is named {suffix} but its content is {_article(signature)}"
            )
        return by_name  # wrong or damaged content fails at parse with a format-specific message
    if signature is not None:
        raise UnsupportedMediaType(f"unsupported file type: {signature}")
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
