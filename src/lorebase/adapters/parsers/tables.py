"""Rows of a spreadsheet or CSV file into header-aware table blocks, with a row cap.

A sheet is turned into table blocks of at most :data:`ROWS_PER_BLOCK` rows and about
:data:`CHARS_PER_BLOCK` characters, each starting with the sheet's header row (its first
non-empty row), so that every chunk made from a block says what its columns are. A block holds
whole rows only; the chunk stage (``pipeline/chunk.py``) cuts a table that is still larger than
a chunk at row boundaries and repeats the header there too.

Rows are consumed from an iterator and never all held at once: past the row cap
(``parse.max_table_rows``) the rest of a file is dropped, and after
:data:`MAX_EMPTY_RUN` consecutive empty rows the rest of a sheet is taken to be empty (an XLSX
that declares a million rows of blank formatting must not cost a million iterations). Both cuts
are reported back in :class:`TableStats` so the parser can say so in the document's metadata.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lorebase.adapters.parsers.document import Block
from lorebase.settings import ParseSettings

#: rows (besides the header) in one table block
ROWS_PER_BLOCK = 30
#: a block is closed once its text reaches about this many characters
CHARS_PER_BLOCK = 1500
#: this many empty rows in a row end a sheet
MAX_EMPTY_RUN = 1000
#: a cell longer than this is cut (a cell holding a whole essay would make one row a chunk)
MAX_CELL_CHARS = 2000

_SPACES = re.compile(r"\s+")

_MAX_ROWS: contextvars.ContextVar[int] = contextvars.ContextVar(
    "max_table_rows", default=ParseSettings().max_table_rows
)


def current_max_rows() -> int:
    return _MAX_ROWS.get()


def set_max_rows(rows: int) -> None:
    """Make ``rows`` the row cap of this context (a parser process calls it once at start)."""
    _MAX_ROWS.set(rows)


@contextmanager
def use_max_rows(rows: int) -> Iterator[None]:
    token = _MAX_ROWS.set(rows)
    try:
        yield
    finally:
        _MAX_ROWS.reset(token)


@dataclass(slots=True)
class TableStats:
    """What was kept and cut across all tables of one document."""

    max_rows: int
    rows: int = 0
    dropped: bool = False
    cut_sheets: list[str] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return self.rows >= self.max_rows

    def warnings(self) -> list[str]:
        if not self.dropped:
            return []
        where = f" (from sheet {', '.join(self.cut_sheets)})" if self.cut_sheets else ""
        return [
            f"only the first {self.max_rows:,} table rows were indexed{where}; "
            "the rest of the file was dropped (parse.max_table_rows)"
        ]


def cell_text(value: object) -> str:
    """A cell as one line of text: whitespace collapsed, numbers without a spurious ``.0``."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    text = _SPACES.sub(" ", str(value)).strip()
    return text[:MAX_CELL_CHARS]


def _row_line(cells: list[str]) -> str:
    while cells and not cells[-1]:
        cells.pop()
    return " | ".join(cells)


def table_blocks(
    rows: Iterable[Iterable[object]], stats: TableStats, *, name: str, page: int | None = None
) -> list[Block]:
    """Table blocks for one sheet's ``rows``; updates ``stats`` (rows taken, whether any dropped)."""
    blocks: list[Block] = []
    header: str | None = None
    body: list[str] = []
    size = 0
    empty_run = 0

    def flush() -> None:
        nonlocal size
        if header is not None and body:
            blocks.append(Block(kind="table", text="\n".join([header, *body]), page=page, header_rows=1))
        elif header is not None and not blocks:
            blocks.append(Block(kind="table", text=header, page=page, header_rows=1))  # header only
        body.clear()
        size = len(header or "")

    for row in rows:
        line = _row_line([cell_text(v) for v in row])
        if not line.replace("|", "").strip():
            empty_run += 1
            if empty_run >= MAX_EMPTY_RUN:
                break
            continue
        empty_run = 0
        if stats.full:
            stats.dropped = True
            stats.cut_sheets.append(name)
            break
        stats.rows += 1
        if header is None:
            header, size = line, len(line)
            continue
        if body and (len(body) >= ROWS_PER_BLOCK or size + len(line) + 1 > CHARS_PER_BLOCK):
            flush()
        body.append(line)
        size += len(line) + 1
    flush()
    return blocks
