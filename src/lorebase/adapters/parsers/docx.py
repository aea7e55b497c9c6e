"""Word (.docx) documents with python-docx, body content in document order.

Paragraphs and tables are interleaved in the body, and a table between two paragraphs must
stay between them for chunks to read right, so the body is walked with
``Document.iter_inner_content()`` rather than ``doc.paragraphs`` then ``doc.tables``.

Word marks structure with styles, not tags: "Heading N" / "Title" become headings and list
items are recognised by their style ("List Bullet 2", "List Number") or by direct numbering
(``w:numPr``), whose bullet-or-number format is looked up in the numbering part. Consecutive
items merge into one list block so a list is chunked as a unit. Headers, footers, comments and
text boxes are not body content and are skipped.

Before python-docx sees the file, its zip directory is checked for a zip bomb and its XML parts
for DTD/entity declarations (``zipguard``): a crawled DOCX never went through upload-time
detection, and the checks cost no decompression beyond each part's prolog.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from docx import Document
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError

from .zipguard import ZipRefused, check_archive, check_xml_parts

DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.I)
_LIST_STYLE = re.compile(r"^list\s+(bullet|number)(?:\s+([2-9]))?$", re.I)
_SPACES = re.compile(r"[ \t\u00a0]+")


def _clean(text: str) -> str:
    return "\n".join(s for s in (_SPACES.sub(" ", line).strip() for line in text.splitlines()) if s)


def _numbering_formats(doc: Any) -> dict[tuple[str, int], str]:
    """(numId, ilvl) -> numFmt ("bullet", "decimal", ...) from the numbering part, if any."""
    try:
        numbering = doc.part.numbering_part.element
    except (KeyError, NotImplementedError, AttributeError):
        return {}
    abstract: dict[str, dict[int, str]] = {}
    for node in numbering.findall(qn("w:abstractNum")):
        levels: dict[int, str] = {}
        for lvl in node.findall(qn("w:lvl")):
            fmt = lvl.find(qn("w:numFmt"))
            fmt_name = fmt.get(qn("w:val"), "decimal") if fmt is not None else "decimal"
            levels[int(lvl.get(qn("w:ilvl"), "0"))] = fmt_name
        abstract[node.get(qn("w:abstractNumId"), "")] = levels
    formats: dict[tuple[str, int], str] = {}
    for num in numbering.findall(qn("w:num")):
        ref = num.find(qn("w:abstractNumId"))
        if ref is None:
            continue
        for ilvl, fmt in abstract.get(ref.get(qn("w:val"), ""), {}).items():
            formats[(num.get(qn("w:numId"), ""), ilvl)] = fmt
    return formats


def _num_pr(paragraph: Paragraph) -> tuple[str, int] | None:
    """(numId, ilvl) of direct or style-inherited numbering; None when not a numbered paragraph."""
    candidates: list[Any] = [paragraph._p.pPr]
    style = paragraph.style
    while style is not None:
        candidates.append(style.element.pPr)
        style = style.base_style
    for ppr in candidates:
        num_pr: Any = ppr.numPr if ppr is not None else None
        if num_pr is not None and num_pr.numId is not None:
            num_id = str(num_pr.numId.val)
            ilvl = num_pr.ilvl.val if num_pr.ilvl is not None else 0
            return None if num_id == "0" else (num_id, int(ilvl))  # numId 0 switches numbering off
    return None


class _ListBuffer:
    """Consecutive list paragraphs, numbered per level, flushed as one list block."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.counters: list[tuple[str, int]] = []  # per level: (list identity, last number)

    def add(self, text: str, level: int, ordered: bool, kind: str) -> None:
        del self.counters[level + 1 :]
        while len(self.counters) <= level:
            self.counters.append(("", 0))
        same_list = self.counters[level][0] == kind
        self.counters[level] = (kind, self.counters[level][1] + 1 if same_list else 1)
        marker = f"{self.counters[level][1]}. " if ordered else "- "
        indent = "  " * level
        for i, line in enumerate(text.split("\n")):
            self.lines.append(indent + (marker if i == 0 else " " * len(marker)) + line)

    def flush(self, out: list[Block]) -> None:
        if self.lines:
            out.append(Block(kind="list", text="\n".join(self.lines)))
        self.lines, self.counters = [], []


def _table_rows(table: Table) -> list[str]:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if previous is not None and cell._tc is previous:  # a horizontally merged cell repeats
                continue
            previous = cell._tc
            cells.append(_clean(" ".join(p.text for p in cell.paragraphs)).replace("\n", " "))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


class DocxParser:
    """Word ``.docx``: headings, lists, tables and paragraphs in document order."""

    media_types: tuple[str, ...] = (DOCX_MEDIA_TYPE,)

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                check_archive(archive)
                check_xml_parts(archive)
        except ZipRefused as exc:
            raise PermanentError(str(exc)) from None
        except (zipfile.BadZipFile, ValueError, OSError):
            pass  # python-docx says what is wrong below
        try:
            doc = Document(io.BytesIO(data))
        except MemoryError:
            raise  # the parse process reports its memory limit
        except zipfile.BadZipFile as exc:
            reason = "the file is not a zip archive (damaged, or not a .docx)"
            raise PermanentError(f"could not read DOCX: {reason}") from exc
        except Exception as exc:  # KeyError, PackageNotFoundError, XML syntax errors ...
            reason = str(exc).strip("\"' ") or type(exc).__name__
            raise PermanentError(f"could not read DOCX: {reason}") from exc
        formats = _numbering_formats(doc)
        blocks: list[Block] = []
        pending = _ListBuffer()
        styled_title: str | None = None
        for item in doc.iter_inner_content():
            if isinstance(item, Table):
                pending.flush(blocks)
                rows = _table_rows(item)
                if rows:
                    # the first row as header: Word's "repeat header row" flag is rarely set
                    blocks.append(
                        Block(kind="table", text="\n".join(rows), header_rows=1 if len(rows) > 1 else 0)
                    )
                continue
            text = _clean(item.text)
            if not text:
                continue
            style_name = (item.style.name if item.style is not None else "") or ""
            heading = _HEADING_STYLE.match(style_name)
            if heading or style_name.lower() == "title":
                pending.flush(blocks)
                level = min(int(heading.group(1)), 6) if heading else 1
                if not heading and styled_title is None:
                    styled_title = text.replace("\n", " ")
                blocks.append(Block(kind="heading", text=text.replace("\n", " "), level=level))
                continue
            list_style = _LIST_STYLE.match(style_name)
            num = _num_pr(item)
            if list_style or num:
                # Word indents "List Bullet 2" through the style, with ilvl 0: take the larger.
                style_level = int(list_style.group(2) or 1) - 1 if list_style else 0
                level = max(num[1] if num else 0, style_level)
                if num is not None and num in formats:
                    ordered = formats[num] != "bullet"
                else:
                    ordered = list_style is not None and list_style.group(1).lower() == "number"
                kind = num[0] if num else style_name
                pending.add(text, min(level, 8), ordered, kind)
                continue
            pending.flush(blocks)
            blocks.append(Block(kind="paragraph", text=text))
        pending.flush(blocks)
        if not blocks:
            raise PermanentError("no extractable text: the DOCX document is empty")
        title = (doc.core_properties.title or "").strip() or styled_title
        return ParsedDocument(title=title, blocks=blocks)
