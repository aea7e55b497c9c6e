"""Which parser handles a file, decided from its bytes first and its name or label second.

Supported: plain text, Markdown, HTML, PDF, DOCX, PPTX, XLSX, CSV/TSV, EPUB, e-mail
(``.eml``, ``message/rfc822``) and PNG, JPEG and TIFF images (OCR'd, ``ocr.py``).

Magic bytes win because names and declared content types lie (``report.pdf`` saved from a
browser as HTML, ``application/octet-stream`` on everything). A zip is told apart by its
directory (``word/document.xml`` is DOCX, ``ppt/presentation.xml`` PPTX, ``xl/workbook.xml``
XLSX, ``META-INF/container.xml`` EPUB). The extension still decides for the
binary formats (PDF, DOCX, PPTX, XLSX, EPUB) when the magic is missing, so that a damaged
``.pdf`` reaches the PDF parser and fails with "could not read PDF: ..." rather than a vague
"unsupported file type" — unless the content has a known binary signature (an ELF executable
named ``x.pdf``), which is refused up front. Binary junk (NUL bytes without a known signature)
is refused instead of being indexed as text. CSV has no magic: it is recognised by its
extension (``.csv``, ``.tsv``) or declared type only, never sniffed (any text would pass). An
e-mail without an ``.eml`` name or a declared type is sniffed from its leading headers.

A zip document's directory is inspected before it is accepted (``zipguard``): a zip bomb is
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
from .eml import EML_MEDIA_TYPE, EmlParser
from .epub import EPUB_MEDIA_TYPE, EpubParser
from .html import HtmlParser
from .markdown import MarkdownParser
from .ocr import JPEG, PNG, TIFF, ImageParser
from .pdf import PdfParser
from .pptx import PPTX_MEDIA_TYPE, PptxParser
from .protocol import Parser
from .spreadsheet import CSV_MEDIA_TYPE, XLSX_MEDIA_TYPE, CsvParser, XlsxParser
from .text import TextParser
from .zipguard import DEFAULT_LIMITS, ZipLimits, ZipRefused, check_archive

PLAIN = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = DOCX_MEDIA_TYPE
PPTX = PPTX_MEDIA_TYPE
XLSX = XLSX_MEDIA_TYPE
CSV = CSV_MEDIA_TYPE
EPUB = EPUB_MEDIA_TYPE
EML = EML_MEDIA_TYPE

SUPPORTED_MEDIA_TYPES: tuple[str, ...] = (
    PLAIN,
    MARKDOWN,
    HTML,
    PDF,
    DOCX,
    PPTX,
    XLSX,
    CSV,
    EPUB,
    EML,
    PNG,
    JPEG,
    TIFF,
)
#: images, OCR'd: they need Tesseract (``ocr.py``)
IMAGE_MEDIA_TYPES = (PNG, JPEG, TIFF)
#: formats whose extension is trusted without their magic (a damaged file fails in its parser)
_BINARY = (PDF, DOCX, PPTX, XLSX, EPUB, PNG, JPEG, TIFF)
#: image signatures (checked after a binary extension's, so a PNG named .docx is still refused)
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
)
#: what each zip-based format has in its directory, and its name in messages
_ZIP_MARKERS = (
    ("word/document.xml", DOCX, "DOCX"),
    ("ppt/presentation.xml", PPTX, "PPTX"),
    ("xl/workbook.xml", XLSX, "XLSX"),
    ("META-INF/container.xml", EPUB, "EPUB"),
)

_PARSERS: dict[str, Parser] = {
    PLAIN: TextParser(),
    MARKDOWN: MarkdownParser(),
    HTML: HtmlParser(),
    PDF: PdfParser(),
    DOCX: DocxParser(),
    PPTX: PptxParser(),
    XLSX: XlsxParser(),
    CSV: CsvParser(),
    EPUB: EpubParser(),
    EML: EmlParser(),
    PNG: ImageParser(),
    JPEG: ImageParser(),
    TIFF: ImageParser(),
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
    ".pptx": PPTX,
    ".xlsx": XLSX,
    ".csv": CSV,
    ".tsv": CSV,
    ".epub": EPUB,
    ".eml": EML,
    ".png": PNG,
    ".jpg": JPEG,
    ".jpeg": JPEG,
    ".tif": TIFF,
    ".tiff": TIFF,
}

#: file extensions recognised (``lorebase ingest`` picks a folder's files by them)
SUPPORTED_EXTENSIONS = frozenset(_EXTENSIONS)

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
    PPTX: PPTX,
    XLSX: XLSX,
    CSV: CSV,
    "text/tab-separated-values": CSV,
    "application/csv": CSV,
    EPUB: EPUB,
    EML: EML,
    PNG: PNG,
    JPEG: JPEG,
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
    TIFF: TIFF,
    "image/tif": TIFF,
}

#: well-known binary signatures, for a clearer refusal than "binary data"
_KNOWN_BINARY = (
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "legacy Office document (.doc/.xls/.ppt); save it as .docx, .xlsx or .pptx",
    ),
    (b"\x7fELF", "executable (ELF)"),
    (b"MZ", "Windows executable"),
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
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
_HEADER_LINE = re.compile(r"^([A-Za-z0-9-]+):")
_MAIL_HEADERS = {"from", "to", "subject", "date", "message-id", "mime-version", "received", "return-path"}
_HTML_START = re.compile(r"^\s*<(?:div|p|h[1-6]|table|article|section|main|ul|ol|meta|title|link)\b", re.I)


def _zip_media_type(data: bytes, limits: ZipLimits | None = DEFAULT_LIMITS) -> str:
    """DOCX, PPTX, XLSX or EPUB by the entries a zip holds (reads the central directory only).

    With ``limits``, a document whose directory is that of a zip bomb is refused (413)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            found = next(((media, kind) for marker, media, kind in _ZIP_MARKERS if marker in names), None)
            if found is not None and limits is not None:
                check_archive(archive, limits, kind=found[1])
    except ZipRefused as exc:
        raise PayloadTooLarge(str(exc)) from None
    except (zipfile.BadZipFile, ValueError, OSError):
        # A damaged zip: trust a .docx (.pptx, ...) name later, else refuse.
        return ""
    if found is not None:
        return found[0]
    raise UnsupportedMediaType(
        "unsupported file type: a zip archive that is not a Word, PowerPoint, Excel or EPUB document"
    )


def _article(what: str) -> str:
    return ("an " if what[0].lower() in "aeiou" else "a ") + what


def _looks_binary(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NULs but a BOM
        return False
    return b"\x00" in head


def _looks_like_email(sample: str) -> bool:
    """Leading lines that are RFC 5322 headers, among them at least two of the usual ones."""
    seen = 0
    for line in sample.lstrip("\ufeff").split("\n", 40)[:40]:
        line = line.rstrip("\r")
        if not line:
            break  # the end of the header block
        if line[0] in " \t":
            continue  # a folded header line
        match = _HEADER_LINE.match(line)
        if match is None:
            return False
        seen += match.group(1).lower() in _MAIL_HEADERS
    return seen >= 2


def _sniff_text(head: bytes) -> str:
    sample = head.decode("utf-8", errors="replace")
    if _HTML_SNIFF.search(sample[:2048]) or _HTML_START.match(sample):
        return HTML
    if _looks_like_email(sample):
        return EML
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

    Order: magic bytes, file extension, declared content type, content sniffing. A zip
    document (DOCX, PPTX, XLSX, EPUB) is checked against ``limits`` (the ``parse`` settings or :class:`ZipLimits`: entries, declared
    size, compression ratio) and refused with :class:`PayloadTooLarge`; ``None`` skips the check
    (every zip format's parser repeats it anyway).
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
    image = next((media for magic, media in _IMAGE_MAGIC if head.startswith(magic)), None)
    if image is not None and (by_name not in _BINARY or by_name in IMAGE_MEDIA_TYPES):
        return image  # an image is an image whatever its (non-document) name says
    if by_name in _BINARY:
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
        raise UnsupportedMediaType(
            f"unsupported file type{name}: binary data that is not a supported document or text"
        )
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
