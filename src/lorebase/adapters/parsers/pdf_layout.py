"""One PDF page's words into blocks: lines, columns, paragraphs, headings, tables.

A PDF has no paragraphs or headings, only positioned glyphs; this module rebuilds them from
geometry (pdfplumber's words with their font size and name):

* **lines**: words sharing a baseline (within a third of their size), left to right;
* **columns**: a vertical gutter in the middle of the page (30-70 % of its width) that no
  word crosses, with at least a fifth of the words on each side, makes two columns; lines that
  cross it (a title over both columns) are read first when they are above the columns, the left
  column next, then the right;
* **paragraphs**: a new one starts where the gap to the previous line is clearly larger than
  the page's usual line spacing (1.4x the median), or where the font changes to a heading's;
* **headings**: a short line (at most :data:`MAX_HEADING_CHARS`) set clearly larger than the
  page's body text (the size that most characters have), or bold at body size without a final
  full stop; its level comes from the size ratio so it needs no look-ahead over other pages;
* **tables**: pdfplumber's table finder (ruled tables); rows become ``a | b | c`` lines, the
  first row the header (``header_rows=1``), and the words inside a table are not repeated as
  paragraphs;
* **margins**: lines in the top or bottom :data:`MARGIN_SHARE` of the page are returned with a
  key (the text with digits blanked and the rounded position) so that :mod:`.pdf` can drop the
  ones repeated on most pages (running headers and footers); a bare page number there is
  dropped at once.
"""

from __future__ import annotations

import itertools
import re
import statistics
from dataclasses import dataclass
from typing import Any

from lorebase.adapters.parsers.document import Block
from lorebase.adapters.parsers.tables import TableStats, table_blocks

#: a heading is at most this long (a bold sentence in body text is not a heading)
MAX_HEADING_CHARS = 120
#: lines within this share of the page height from the top or bottom are margin candidates
MARGIN_SHARE = 0.09
#: a gap wider than this share of the font size separates words (pdfplumber's fixed 3 pt glues
#: the words of tightly set small type: "byJulianSeward" in Debian's bzip2 manual)
WORD_GAP = 0.15
#: the narrowest empty band between two columns, in points (word gaps are 2-4 pt)
MIN_GUTTER = 9
_PAGE_NUMBER = re.compile(
    r"^(page\s+)?[-\u2013\u2014 ]*(\d{1,5}|[ivxlcdm]{1,7})(\s*(/|of)\s*\d{1,5})?[-\u2013\u2014 ]*$", re.I
)
_DIGITS = re.compile(r"\d+")
#: control characters PDF text carries for soft hyphens and unmapped glyphs
JUNK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


@dataclass(slots=True)
class Line:
    text: str
    top: float
    bottom: float
    x0: float
    x1: float
    size: float
    bold: bool


@dataclass(slots=True)
class PageBlock:
    """A block of one page, with the margin key of a possible running header/footer line."""

    block: Block
    margin_key: str | None = None


def _is_bold(fontname: str) -> bool:
    name = fontname.lower()
    return "bold" in name or "black" in name or "heavy" in name or name.endswith(",b")


def _lines(words: list[dict[str, Any]]) -> list[Line]:
    lines: list[Line] = []
    current: list[dict[str, Any]] = []
    for word in sorted(words, key=lambda w: (round(w["bottom"], 0), w["x0"])):
        if current and abs(word["bottom"] - current[-1]["bottom"]) > max(1.0, word["size"] / 3):
            lines.append(_line(current))
            current = []
        current.append(word)
    if current:
        lines.append(_line(current))
    return lines


def _line(words: list[dict[str, Any]]) -> Line:
    words.sort(key=lambda w: w["x0"])
    return Line(
        text=JUNK.sub("", " ".join(w["text"] for w in words)),
        top=min(w["top"] for w in words),
        bottom=max(w["bottom"] for w in words),
        x0=words[0]["x0"],
        x1=max(w["x1"] for w in words),
        size=max(w["size"] for w in words),
        bold=all(_is_bold(w["fontname"]) for w in words),
    )


def _gutter(words: list[dict[str, Any]], width: float) -> float | None:
    """The x of a two-column gutter, or None for a single column.

    A gutter is a band at least :data:`MIN_GUTTER` wide in the middle of the page that at most a
    few words cross (a title over both columns), with a fifth of the words on each side.
    """
    if len(words) < 20:
        return None
    cover = [0] * (int(width) + 2)
    for w in words:
        a, b = max(0, int(w["x0"])), min(int(width), int(w["x1"]))
        if b > a:
            cover[a] += 1
            cover[b + 1] -= 1
    allowed = max(2, len(words) // 50)
    runs: list[tuple[int, int]] = []
    depth, start = 0, None
    for x in range(int(width) + 1):
        depth += cover[x]
        if depth <= allowed and start is None:
            start = x
        elif depth > allowed and start is not None:
            runs.append((start, x))
            start = None
    lo, hi = width * 0.3, width * 0.7
    for a, b in sorted(runs, key=lambda r: r[0] - r[1]):
        middle = (a + b) / 2
        if b - a < MIN_GUTTER or not lo <= middle <= hi:
            continue
        left = sum(1 for w in words if w["x1"] <= middle)
        right = sum(1 for w in words if w["x0"] >= middle)
        if min(left, right) >= len(words) / 5:
            return middle
    return None


def _reading_order(words: list[dict[str, Any]], width: float) -> list[Line]:
    gutter = _gutter(words, width)
    if gutter is None:
        return _lines(words)
    left = [w for w in words if w["x1"] <= gutter]
    right = [w for w in words if w["x0"] >= gutter]
    spanning = _lines([w for w in words if w["x0"] < gutter < w["x1"]])
    columns = _lines(left) + _lines(right)
    columns_top = min(line.top for line in columns) if columns else 0.0
    above = [line for line in spanning if line.top < columns_top]
    below = [line for line in spanning if line.top >= columns_top]
    return above + columns + below


def _heading_level(line: Line, body: float) -> int:
    """1-4 for a heading line, 0 for body text."""
    if len(line.text) > MAX_HEADING_CHARS or not any(c.isalpha() for c in line.text):
        return 0
    ratio = line.size / body if body else 1.0
    if ratio >= 1.6:
        return 1
    if ratio >= 1.3:
        return 2
    if ratio >= 1.12:
        return 3
    if line.bold and ratio >= 0.95 and not line.text.endswith((".", ",", ";", ":")):
        return 4
    return 0


def _margin_key(line: Line, height: float) -> str:
    return (
        f"{'top' if line.top < height / 2 else 'bottom'}:{round(line.top / 4)}:{_DIGITS.sub('#', line.text)}"
    )


def page_blocks(page: Any, number: int, stats: TableStats) -> list[PageBlock]:
    """The blocks of one pdfplumber ``page`` (1-based ``number``) in reading order."""
    tables, boxes = _tables(page, number, stats)
    words = [
        w
        for w in page.extract_words(extra_attrs=["size", "fontname"], x_tolerance_ratio=WORD_GAP)
        if not _inside(w, boxes)
    ]
    body = _body_size(words)
    height = float(page.height)
    margins = _margin_lines(_lines(words), body, height)
    inside = [w for w in words if not any(m.top <= w["top"] and w["bottom"] <= m.bottom for m in margins)]
    out = [_margin_block(m, number, height) for m in margins if m.top < height / 2]
    out += _flow(_reading_order(inside, float(page.width)), tables, body, number)
    out += [_margin_block(m, number, height) for m in margins if m.top >= height / 2]
    return [b for b in out if b.block.text]


Box = tuple[float, float, float, float]


def _tables(
    page: Any, number: int, stats: TableStats
) -> tuple[list[tuple[float, list[PageBlock]]], list[Box]]:
    """The page's ruled tables as (top, blocks), top to bottom, and their bounding boxes."""
    tables: list[tuple[float, list[PageBlock]]] = []
    boxes: list[Box] = []
    for table in page.find_tables():
        rows = [[cell or "" for cell in row] for row in table.extract()]
        blocks = table_blocks(rows, stats, name=f"page {number}", page=number)
        tables.append((table.bbox[1], [PageBlock(b) for b in blocks]))
        boxes.append(table.bbox)
    tables.sort(key=lambda t: t[0])
    return tables, boxes


def _inside(word: dict[str, Any], boxes: list[Box]) -> bool:
    cx, cy = (word["x0"] + word["x1"]) / 2, (word["top"] + word["bottom"]) / 2
    return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes)


def _body_size(words: list[dict[str, Any]]) -> float:
    """The font size that most of the page's characters have."""
    sizes: dict[float, int] = {}
    for w in words:
        sizes[round(w["size"], 1)] = sizes.get(round(w["size"], 1), 0) + len(w["text"])
    return max(sizes, key=lambda s: sizes[s]) if sizes else 0.0


def _flow(
    lines: list[Line], tables: list[tuple[float, list[PageBlock]]], body: float, number: int
) -> list[PageBlock]:
    """Lines in reading order into headings and paragraphs; each table before the first line below it."""
    out: list[PageBlock] = []
    leading = _leading(lines)
    para: list[Line] = []

    def flush() -> None:
        if para:
            out.append(
                PageBlock(Block(kind="paragraph", text="\n".join(ln.text for ln in para), page=number))
            )
            para.clear()

    pending = list(tables)
    previous: Line | None = None
    for line in lines:
        while pending and pending[0][0] < line.top:
            flush()
            out.extend(pending.pop(0)[1])
        level = _heading_level(line, body)
        if level:
            flush()
            out.append(PageBlock(Block(kind="heading", text=line.text, level=level, page=number)))
        else:
            gap = line.top - previous.bottom if previous is not None else 0.0
            if para and (previous is None or line.top < previous.top or gap > leading):
                flush()
            para.append(line)
        previous = line
    flush()
    for _, rest in pending:
        out.extend(rest)
    return out


def _margin_lines(lines: list[Line], body: float, height: float) -> list[Line]:
    """The page's first and last line when they sit in the margin zone at body size or smaller."""
    zone = height * MARGIN_SHARE
    ordered = sorted(lines, key=lambda ln: ln.top)
    edges = ordered[:1] + ordered[-1:] if len(ordered) > 1 else ordered
    return [ln for ln in edges if (ln.bottom <= zone or ln.top >= height - zone) and ln.size <= body * 1.05]


def _margin_block(line: Line, number: int, height: float) -> PageBlock:
    """A margin line with its running-line key; a bare page number becomes an empty block."""
    if _PAGE_NUMBER.match(line.text):
        return PageBlock(Block(kind="paragraph", text="", page=number))
    return PageBlock(Block(kind="paragraph", text=line.text, page=number), _margin_key(line, height))


def _leading(lines: list[Line]) -> float:
    """The gap between lines above which a new paragraph starts."""
    gaps = [b.top - a.bottom for a, b in itertools.pairwise(lines) if b.top - a.bottom >= 0]
    typical = statistics.median(gaps) if gaps else 0.0
    return max(typical * 1.4, typical + 1.5)
