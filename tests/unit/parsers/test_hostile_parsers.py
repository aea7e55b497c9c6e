"""Hostile files met before and inside parsing: zip bombs, entity expansion, binaries named .pdf.

The files are real (``support.hostile``); nothing here parses more than a prolog or a central
directory, so the tests are fast.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from lxml import etree

from factories import docx_bytes, epub_bytes, pdf_bytes, pptx_bytes, xlsx_bytes
from lorebase.adapters.parsers import zipguard
from lorebase.adapters.parsers.docx import DocxParser
from lorebase.adapters.parsers.registry import DOCX, PDF, XLSX, detect_media_type, parse_bytes
from lorebase.errors import PayloadTooLarge, PermanentError, UnsupportedMediaType
from lorebase.settings import ParseSettings
from support import hostile

GOOD_DOCX = docx_bytes("Coffee", [("Roasting", "Beans pop at the first crack.")])


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    return hostile.zip_bomb_docx()


def test_the_zip_bomb_is_small_but_declares_over_a_gigabyte(zip_bomb: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(zip_bomb)) as archive:
        declared = sum(i.file_size for i in archive.infolist())
        assert "word/document.xml" in archive.namelist()
        # one record read alone inflates for real (valid CRC): the bomb is not just a lie
        with archive.open("word/media/zeros.bin") as entry:
            assert entry.read(1024 * 1024) == bytes(1024 * 1024)
    assert len(zip_bomb) < 200_000 and declared > 1024**3


def test_zip_bomb_is_refused_at_detection_with_its_size(zip_bomb: bytes) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        detect_media_type(zip_bomb, "report.docx")
    assert caught.value.status_code == 413
    assert caught.value.message == "refused: the DOCX would expand to 1.2 GB (limit 512 MB)"
    # the configured limits are used when given
    roomy = ParseSettings(zip_max_uncompressed_bytes=2 * 1024**3, zip_max_ratio=2000)
    assert detect_media_type(zip_bomb, "report.docx", limits=roomy) == DOCX
    assert detect_media_type(zip_bomb, "report.docx", limits=None) == DOCX  # the crawler's call


def test_zip_bomb_is_refused_by_the_docx_parser_too(zip_bomb: bytes) -> None:
    with pytest.raises(PermanentError, match=r"refused: the DOCX would expand to 1\.2 GB \(limit 512 MB\)"):
        DocxParser().parse(zip_bomb, filename="crawled.docx")


def test_a_single_entry_with_a_bomb_compression_ratio_is_refused() -> None:
    data = hostile.ratio_bomb_docx(mib=20)
    with pytest.raises(zipguard.ZipRefused, match=r"'word/media/zeros\.bin' would expand 1,0\d\d times"):
        zipguard.check_zip(data)
    zipguard.check_zip(data, zipguard.ZipLimits(10_000, 512 * 1024**2, 5000))  # within a looser ratio


def test_too_many_entries_are_refused_with_the_configured_limit() -> None:
    data = hostile.many_entries_docx(60)
    zipguard.check_zip(data)  # the default allows 10,000
    tight = zipguard.ZipLimits(max_entries=50, max_uncompressed_bytes=512 * 1024**2, max_ratio=200)
    with pytest.raises(zipguard.ZipRefused, match=r"holds \d\d zip entries \(limit 50\)"):
        zipguard.check_zip(data, tight)
    with zipguard.use_limits(tight), pytest.raises(PermanentError, match="zip entries"):
        DocxParser().parse(data)
    assert DocxParser().parse(data).blocks  # outside the context, the defaults again


def test_an_ordinary_docx_passes_every_check() -> None:
    zipguard.check_zip(GOOD_DOCX)
    with zipfile.ZipFile(io.BytesIO(GOOD_DOCX)) as archive:
        zipguard.check_xml_parts(archive)
    assert detect_media_type(GOOD_DOCX, "coffee.docx") == DOCX
    assert [b.text for b in parse_bytes(GOOD_DOCX, DOCX).blocks][:2] == ["Coffee", "Roasting"]


def test_billion_laughs_docx_is_refused_before_python_docx_reads_it() -> None:
    data = hostile.billion_laughs_docx()
    assert detect_media_type(data, "laughs.docx") == DOCX  # nothing wrong with its zip
    with pytest.raises(PermanentError) as caught:
        parse_bytes(data, DOCX, "laughs.docx")
    assert caught.value.message == (
        "refused: the DOCX contains XML entity declarations (a billion-laughs attack?) in word/document.xml"
    )


def test_python_docx_parser_does_not_expand_entities() -> None:
    """Belt and braces: python-docx's own lxml parser keeps entity references unresolved."""
    from docx.oxml.parser import parse_xml

    doc = b'<!DOCTYPE r [<!ENTITY e "EXPANDED">]><r>&e;</r>'
    assert b"EXPANDED" not in etree.tostring(parse_xml(doc)).split(b"]>")[-1]
    with pytest.raises(etree.XMLSyntaxError):  # and libxml2 caps amplification on top
        parse_xml(hostile.BILLION_LAUGHS_PROLOG + b"<r>&lol9;</r>")


def test_a_doctype_without_entities_is_refused_too() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(GOOD_DOCX)) as source, zipfile.ZipFile(buf, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "word/styles.xml":
                data = data.replace(b"?>", b"?><!DOCTYPE w:styles>", 1)
            out.writestr(item, data)
    with pytest.raises(PermanentError, match=r"DTD \(<!DOCTYPE>\) in word/styles\.xml"):
        DocxParser().parse(buf.getvalue())


def test_an_executable_named_pdf_or_docx_is_refused_at_detection() -> None:
    elf = hostile.elf_named_pdf()
    with pytest.raises(UnsupportedMediaType) as caught:
        detect_media_type(elf, "x.pdf", "application/pdf")
    assert caught.value.status_code == 415
    assert caught.value.message == (
        "unsupported file type: the file is named .pdf but its content is an executable (ELF)"
    )
    with pytest.raises(UnsupportedMediaType, match=r"named \.docx but its content is a PNG image"):
        detect_media_type(b"\x89PNG\r\n\x1a\n" + bytes(64), "photo.docx")


def test_a_damaged_pdf_without_a_binary_signature_still_goes_to_the_parser() -> None:
    damaged = pdf_bytes(["text"])[40:]  # no %PDF- header, no known signature
    assert detect_media_type(damaged, "broken.pdf") == PDF
    with pytest.raises(PermanentError, match="could not read PDF"):
        parse_bytes(damaged, PDF, "broken.pdf")


def test_circular_xref_pdf_fails_with_a_readable_error() -> None:
    data = hostile.circular_xref_pdf()
    assert detect_media_type(data, "loop.pdf") == PDF
    with pytest.raises(PermanentError, match=r"^could not read PDF: .+"):
        parse_bytes(data, PDF, "loop.pdf")


@pytest.mark.parametrize(
    ("kind", "original", "filename"),
    [
        ("PPTX", pptx_bytes([("Deck", ["A harmless slide."], "Notes.")]), "deck.pptx"),
        ("XLSX", xlsx_bytes({"Sheet": [["a", "b"], [1, 2]]}), "book.xlsx"),
        ("EPUB", epub_bytes("Book", [("One", "<h1>One</h1><p>A harmless chapter.</p>")]), "book.epub"),
    ],
)
def test_pptx_xlsx_and_epub_zip_bombs_are_refused_at_detection_and_by_their_parser(
    kind: str, original: bytes, filename: str
) -> None:
    bomb = hostile.zip_bomb_of(original)
    assert len(bomb) < 200_000
    message = f"refused: the {kind} would expand to 1.2 GB (limit 512 MB)"
    with pytest.raises(PayloadTooLarge) as caught:
        detect_media_type(bomb, filename)
    assert caught.value.status_code == 413 and caught.value.message == message
    media_type = detect_media_type(bomb, filename, limits=None)  # the crawler's call
    with pytest.raises(PermanentError) as failed:
        parse_bytes(bomb, media_type, filename)
    assert failed.value.message == message
    assert parse_bytes(original, media_type, filename).blocks  # the same file without the bomb


def test_an_xlsx_with_entity_declarations_is_refused_before_openpyxl_reads_it() -> None:
    original = xlsx_bytes({"Sheet": [["a", "b"], [1, 2]]})
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as source, zipfile.ZipFile(buf, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = hostile.BILLION_LAUGHS_PROLOG + data  # openpyxl writes no XML declaration
            out.writestr(item, data)
    with pytest.raises(PermanentError) as caught:
        parse_bytes(buf.getvalue(), XLSX, "laughs.xlsx")
    assert caught.value.message == (
        "refused: the XLSX contains XML entity declarations (a billion-laughs attack?) in xl/worksheets/sheet1.xml"
    )
