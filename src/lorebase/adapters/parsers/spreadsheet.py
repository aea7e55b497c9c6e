"""Spreadsheets: Excel (.xlsx) with openpyxl and CSV with the standard library.

Each sheet is a section — a heading with the sheet's name (a CSV file's is its file name) —
followed by header-aware table blocks (``tables.py``): the first non-empty row is the header
and opens every block the sheet is cut into, so a chunk of rows 400-430 still says what its
columns mean.

Memory and time stay bounded on hostile or merely huge files:

* XLSX is opened with ``read_only=True`` and rows are streamed (``iter_rows``), never loaded
  as a grid. The sheet's declared ``dimension`` is ignored (``reset_dimensions``): a file can
  declare a million rows by 16,384 columns while holding three cells, and openpyxl would pad
  every row to that width. Columns past :data:`MAX_COLUMNS` are not read; a run of
  ``tables.MAX_EMPTY_RUN`` empty rows ends a sheet (a cell at row 1,000,000 after a real table
  is not reached; reading to it would cost a million empty rows).
* ``parse.max_table_rows`` caps the rows of a whole file; the rest is dropped and
  ``metadata["warnings"]`` says so (``metadata["rows"]`` counts what was kept).
* Cached values are read (``data_only=True``): a formula's last computed result, not its text.

CSV is decoded like a text file (``text.decode_text``: BOM, UTF-8, then legacy code pages) and
its dialect (delimiter, quoting) sniffed with :class:`csv.Sniffer` on the first
:data:`SNIFF_CHARS` characters, falling back to commas.

The XLSX zip goes through ``zipguard`` (bomb and DTD/entity checks) before openpyxl opens it.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import PurePosixPath
from typing import Any

from openpyxl import load_workbook

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError

from .tables import TableStats, current_max_rows, table_blocks
from .text import decode_text
from .zipguard import guard_zip

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MEDIA_TYPE = "text/csv"
#: sheet headings are level 2, so that a workbook without a title is titled by its file name
#: (the pipeline titles a document by a leading level-1 heading), not "Sheet1"
SHEET_LEVEL = 2
#: columns of a sheet that are read
MAX_COLUMNS = 200
#: characters of a CSV file the dialect is sniffed from
SNIFF_CHARS = 64 * 1024


def _value(value: Any) -> Any:
    """Dates without a midnight time; everything else as openpyxl gives it."""
    if isinstance(value, datetime) and value.time() == time(0):
        return value.date().isoformat()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return value


def _rows(sheet: Any) -> Iterator[list[Any]]:
    # No max_col: openpyxl would pad every row to it. Without it (and without the declared
    # dimension) a row is as wide as its last cell, and empty rows are empty.
    for row in sheet.iter_rows(values_only=True):
        yield [_value(v) for v in row[:MAX_COLUMNS]]


def _finish(blocks: list[Block], stats: TableStats, kind: str, title: str | None) -> ParsedDocument:
    if not blocks:
        raise PermanentError(f"no extractable text: the {kind} file has no non-empty cells")
    metadata: dict[str, Any] = {"rows": stats.rows}
    if warnings := stats.warnings():
        metadata["warnings"] = warnings
        metadata["rows_dropped"] = True
    return ParsedDocument(title=title, blocks=blocks, metadata=metadata)


class XlsxParser:
    """Excel ``.xlsx``: a section per sheet, rows as header-aware table blocks."""

    media_types: tuple[str, ...] = (XLSX_MEDIA_TYPE,)

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        guard_zip(data, "XLSX")
        stats = TableStats(current_max_rows())
        blocks: list[Block] = []
        try:
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            try:
                for sheet in book.worksheets:
                    if stats.full:
                        stats.dropped = True
                        stats.cut_sheets.append(sheet.title)
                        continue
                    sheet.reset_dimensions()
                    tables = table_blocks(_rows(sheet), stats, name=sheet.title)
                    if tables:
                        blocks.append(Block(kind="heading", text=sheet.title, level=SHEET_LEVEL))
                        blocks.extend(tables)
                title = (book.properties.title or "").strip() or None
            finally:
                book.close()
        except (MemoryError, PermanentError):
            raise
        except zipfile.BadZipFile as exc:
            raise PermanentError(
                "could not read XLSX: the file is not a zip archive (damaged, or not a .xlsx)"
            ) from exc
        except Exception as exc:  # KeyError, InvalidFileException, XML syntax errors ...
            reason = str(exc).strip("\"' ") or type(exc).__name__
            raise PermanentError(f"could not read XLSX: {reason}") from exc
        return _finish(blocks, stats, "XLSX", title)


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    if "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


class CsvParser:
    """CSV (and TSV): one section, rows as header-aware table blocks."""

    media_types: tuple[str, ...] = (CSV_MEDIA_TYPE, "text/tab-separated-values")

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        text = decode_text(data)
        stem = PurePosixPath((filename or "").replace("\\", "/")).stem or "CSV"
        stats = TableStats(current_max_rows())
        try:
            reader = csv.reader(io.StringIO(text), _dialect(text[:SNIFF_CHARS]))
            tables = table_blocks(reader, stats, name=stem)
        except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit
            raise PermanentError(f"could not read CSV: {exc}") from exc
        blocks = [Block(kind="heading", text=stem, level=SHEET_LEVEL), *tables] if tables else []
        return _finish(blocks, stats, "CSV", None)
