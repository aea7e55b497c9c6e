"""Plain text: decoded sensibly and cut into paragraphs at blank lines.

Text files arrive in whatever encoding the author's editor used, so decoding tries, in order:
a BOM (UTF-8 or UTF-16), strict UTF-8, then mostly-UTF-8 with a few bad bytes (a truncated
download, one stray byte) decoded with replacement characters, and finally Windows-1252 /
Latin-1 for legacy files. Latin-1 never fails, so it must come after the UTF-8 checks or
every UTF-8 file with accents would turn into mojibake.
"""

from __future__ import annotations

import re

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError

_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n\s*")
#: control characters that only confuse tokenizers (keeps \t and \n)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def decode_text(data: bytes) -> str:
    """Decode bytes of unknown encoding into text with normalized ``\\n`` line endings."""
    if data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = _decode_non_utf8(data)
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _decode_non_utf8(data: bytes) -> str:
    """Tell "UTF-8 with a few broken bytes" from a legacy single-byte encoding."""
    lenient = data.decode("utf-8", errors="replace")
    bad = lenient.count("\ufffd")
    non_ascii = sum(1 for ch in lenient if ord(ch) > 127) - bad
    # Real multi-byte sequences outnumber the broken ones: it is UTF-8, slightly damaged.
    if non_ascii > 0 and bad <= max(2, non_ascii // 10):
        return lenient
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, with trailing spaces removed from each line."""
    out: list[str] = []
    for para in _BLANK_LINES.split(text):
        cleaned = "\n".join(line.rstrip() for line in para.strip("\n").splitlines()).strip()
        if cleaned:
            out.append(cleaned)
    return out


class TextParser:
    """``text/plain``: one paragraph block per blank-line separated run of lines; no title."""

    media_types: tuple[str, ...] = ("text/plain",)

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        blocks = [Block(kind="paragraph", text=p) for p in split_paragraphs(decode_text(data))]
        if not blocks:
            raise PermanentError("no extractable text: the text file is empty")
        return ParsedDocument(title=None, blocks=blocks)
