"""Hostile files, built for real: a zip-bomb DOCX, a billion-laughs DOCX, PDFs that loop or
explode, an executable named ``.pdf``.

* :func:`zip_bomb_docx` — a valid python-docx document plus ``word/media/zeros.bin``, a real
  deflate stream of ``entry_mib`` MiB of zeros (~1000:1), listed ``copies`` times in the central
  directory, every record pointing at the same local entry (the "overlapping entries" zip
  bomb: each record, read alone, inflates to the full run of zeros with a valid CRC). With the
  defaults the file is ~120 KB and declares ~1.2 GB uncompressed. :mod:`zipfile` writes it:
  the extra records are appended to ``ZipFile.filelist`` before the directory is written.
* :func:`zip_bomb_of` — the same bomb added to another zip document (a python-pptx deck, an
  openpyxl workbook).
* :func:`ratio_bomb_docx` — an honest single entry of zeros: refused by its compression ratio.
* :func:`billion_laughs_docx` — ``word/document.xml`` opens with a DOCTYPE of ten nested
  ``<!ENTITY>`` declarations (10^10 "lol"s once expanded).
* :func:`circular_xref_pdf` — a one-page PDF whose xref ``/Prev`` points at itself, whose page
  tree is a loop (the page's only kid is its parent) and whose trailer has no usable root.
* :func:`endless_content_pdf` — one page whose content stream is a ~300 KB FlateDecode stream
  inflating to ``mib`` (100) MiB of text-drawing operators: in-process, PDFium needs ~8 s of
  CPU and over 1 GB of memory for it (300 MiB: 23 s, 3.8 GB peak RSS).
* :func:`elf_named_pdf` — the first KB of the running Python interpreter (an ELF binary on Linux).
"""

from __future__ import annotations

import copy
import io
import sys
import zipfile
import zlib
from collections.abc import Callable

from docx import Document as DocxDocument

_MIB = 1024 * 1024


def _small_docx(text: str = "A harmless paragraph.") -> bytes:
    doc = DocxDocument()
    doc.add_paragraph(text)
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def _zeros_entry(archive: zipfile.ZipFile, name: str, mib: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as entry:
        block = bytes(_MIB)
        for _ in range(mib):
            entry.write(block)
    return info


def _rewrite_docx(
    add: Callable[[zipfile.ZipFile], object] | None = None,
    *,
    text: str = "A harmless paragraph.",
    change: Callable[[zipfile.ZipInfo, bytes], bytes] | None = None,
    original: bytes | None = None,
) -> bytes:
    """A copy of a small python-docx document (or of ``original``, another zip document), each
    part passed through ``change`` and then ``add`` given the archive to put more entries in."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(original or _small_docx(text))) as source,
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for item in source.infolist():
            data = source.read(item)
            out.writestr(item, change(item, data) if change else data)
        if add is not None:
            add(out)
    return buf.getvalue()


def zip_bomb_docx(entry_mib: int = 100, copies: int = 12) -> bytes:
    """~``entry_mib * copies`` MiB declared in ~``entry_mib`` KB (see the module docstring)."""

    def add(out: zipfile.ZipFile) -> None:
        zeros = _zeros_entry(out, "word/media/zeros.bin", entry_mib)
        for _ in range(copies - 1):
            out.filelist.append(copy.copy(zeros))  # another directory record, same local entry

    return _rewrite_docx(add)


def zip_bomb_of(original: bytes, entry_mib: int = 100, copies: int = 12) -> bytes:
    """:func:`zip_bomb_docx` built on another zip document (a PPTX, an XLSX) made by its own tool."""

    def add(out: zipfile.ZipFile) -> None:
        zeros = _zeros_entry(out, "docProps/zeros.bin", entry_mib)
        for _ in range(copies - 1):
            out.filelist.append(copy.copy(zeros))

    return _rewrite_docx(add, original=original)


def ratio_bomb_docx(mib: int = 20) -> bytes:
    """A DOCX with one honest entry of ``mib`` MiB of zeros (compression ratio ~1000)."""
    return _rewrite_docx(lambda out: _zeros_entry(out, "word/media/zeros.bin", mib))


def many_entries_docx(extra: int) -> bytes:
    """A valid DOCX with ``extra`` more (tiny) entries."""

    def add(out: zipfile.ZipFile) -> None:
        for i in range(extra):
            out.writestr(f"customXml/item{i}.bin", b"x")

    return _rewrite_docx(add)


BILLION_LAUGHS_PROLOG = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b"<!DOCTYPE w:document [\n"
    b'  <!ENTITY lol "lol">\n'
    + b"".join(
        f'  <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'.encode()
        for i in range(1, 10)
    )
    + b"]>\n"
)


def billion_laughs_docx() -> bytes:
    """A python-docx document whose ``word/document.xml`` declares and uses nested entities."""

    def change(item: zipfile.ZipInfo, data: bytes) -> bytes:
        if item.filename != "word/document.xml":
            return data
        body = data.split(b"?>", 1)[1].lstrip()  # drop the original XML declaration
        return BILLION_LAUGHS_PROLOG + body.replace(b"LAUGHS-HERE", b"&lol9;")

    return _rewrite_docx(text="LAUGHS-HERE", change=change)


def _pdf(objects: list[bytes], trailer: bytes, *, xref_prev_self: bool = False) -> bytes:
    """A PDF from numbered object bodies (1-based), with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    extra = b" /Prev %d" % xref_at if xref_prev_self else b""
    out += b"trailer\n<< /Size %d %s%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        trailer,
        extra,
        xref_at,
    )
    return bytes(out)


def circular_xref_pdf() -> bytes:
    """The xref's /Prev is itself, the page tree loops and the catalog is not where /Root says."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 /Parent 3 0 R >>",
        b"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>",
    ]
    return _pdf(objects, b"/Root 4 0 R", xref_prev_self=True)


def endless_content_pdf(mib: int = 100) -> bytes:
    """One page whose content stream inflates to ``mib`` MiB of text operators."""
    ops = b"BT /F1 1 Tf 1 0 0 1 10 10 Tm (lol) Tj ET\n"
    block = ops * (_MIB // len(ops))
    squeeze = zlib.compressobj(6)
    stream = b"".join(squeeze.compress(block) for _ in range(mib)) + squeeze.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return _pdf(objects, b"/Root 1 0 R")


def elf_named_pdf() -> bytes:
    """The first KB of an executable (the Python interpreter running the tests)."""
    with open(sys.executable, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"\x7fELF"):  # pragma: no cover - not Linux
        head = b"\x7fELF\x02\x01\x01" + bytes(1017)
    return head
