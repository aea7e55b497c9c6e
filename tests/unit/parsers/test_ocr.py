"""OCR with the real Tesseract on images drawn by Pillow with a TrueType font (no mocks)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from factories import image_bytes, pdf_bytes, scanned_pdf_bytes, text_image
from lorebase.adapters.embedders.local import load_tokenizer
from lorebase.adapters.parsers import ocr
from lorebase.adapters.parsers.ocr import OcrLimits
from lorebase.adapters.parsers.registry import detect_media_type, parse_bytes
from lorebase.errors import PermanentError
from lorebase.pipeline.chunk import chunk
from lorebase.pipeline.types import ChunkingConfig
from support import tesseract

LINES = ["The lighthouse keeper of Vardo", "feeds seventeen cormorants daily."]


@pytest.fixture(autouse=True)
def _default_ocr() -> Iterator[None]:
    tesseract.require()
    with ocr.use_limits(OcrLimits()):
        yield


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("fmt", "name", "media"),
    [("PNG", "a.png", "image/png"), ("JPEG", "a.jpg", "image/jpeg"), ("TIFF", "a.tif", "image/tiff")],
)
def test_an_image_is_detected_by_its_magic_and_read_by_ocr(fmt: str, name: str, media: str) -> None:
    data = image_bytes(LINES, fmt)
    assert detect_media_type(data, None) == media == detect_media_type(data, name, "application/octet-stream")
    doc = parse_bytes(data, media, name)
    assert [b.kind for b in doc.blocks] == ["ocr"]
    assert _words(doc.text) == "The lighthouse keeper of Vardo feeds seventeen cormorants daily."
    assert doc.blocks[0].confidence is not None and doc.blocks[0].confidence > 80
    assert doc.metadata == {"ocr": True}


def test_image_names_and_declared_types_are_recognised() -> None:
    assert detect_media_type(b"\x89PNG\r\n\x1a\n damaged", "scan.png") == "image/png"
    assert detect_media_type(b"not really", "scan.jpeg") == "image/jpeg"
    assert detect_media_type(b"not really", None, "image/tiff") == "image/tiff"
    with pytest.raises(PermanentError, match="could not read image"):
        parse_bytes(b"\x89PNG\r\n\x1a\n damaged", "image/png", "scan.png")


def test_a_multi_page_tiff_is_read_page_by_page() -> None:
    data = image_bytes([["Chapter one: the harbour"], ["Chapter two: the storm"]], "TIFF")
    doc = parse_bytes(data, "image/tiff", "book.tiff")
    assert doc.page_count == 2
    assert [(b.page, _words(b.text)) for b in doc.blocks] == [
        (1, "Chapter one: the harbour"),
        (2, "Chapter two: the storm"),
    ]


def test_ocr_chunks_have_type_ocr_and_the_confidence() -> None:
    doc = parse_bytes(image_bytes(LINES), "image/png", "a.png")
    drafts = chunk(
        doc,
        ChunkingConfig(chunk_size=200, chunk_overlap=0),
        load_tokenizer("all-MiniLM-L6-v2"),
        max_tokens=256,
    )
    assert [d.metadata["type"] for d in drafts] == ["ocr"]
    assert drafts[0].metadata["ocr_confidence"] == doc.blocks[0].confidence


def test_a_scanned_pdf_page_is_rendered_and_read_by_ocr() -> None:
    doc = parse_bytes(scanned_pdf_bytes(LINES), "application/pdf", "scan.pdf")
    assert [(b.kind, b.page) for b in doc.blocks] == [("ocr", 1)]
    assert "seventeen cormorants" in _words(doc.text)
    assert "warnings" not in doc.metadata


def test_a_pdf_with_text_and_scanned_pages_keeps_page_order() -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for number in (1, 3):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Typed page {number}.")
        if number == 1:
            pdf.add_page()  # page 2: a picture only
            pdf.image(text_image(LINES), x=10, y=10, w=190)
    doc = parse_bytes(bytes(pdf.output()), "application/pdf", "mixed.pdf")
    assert [(b.kind, b.page) for b in doc.blocks] == [("paragraph", 1), ("ocr", 2), ("paragraph", 3)]
    assert "seventeen cormorants" in _words(doc.blocks[1].text)
    with ocr.use_limits(OcrLimits(enabled=False)):  # off: the typed pages, and a warning for the other
        off = parse_bytes(bytes(pdf.output()), "application/pdf", "mixed.pdf")
    assert [b.page for b in off.blocks] == [1, 3]
    assert off.metadata["warnings"] == ["page(s) 2 have no text layer; OCR is off: not indexed"]


def test_a_page_below_the_confidence_floor_is_named_in_the_warnings() -> None:
    with ocr.use_limits(OcrLimits(min_confidence=99.9)):
        doc = parse_bytes(scanned_pdf_bytes(LINES), "application/pdf", "scan.pdf")
    assert doc.blocks and "OCR confidence below 99.9 on page(s) 1 (" in doc.metadata["warnings"][0]


def test_with_ocr_off_a_scanned_pdf_fails_and_an_image_is_refused() -> None:
    with ocr.use_limits(OcrLimits(enabled=False)):
        with pytest.raises(PermanentError, match="no text layer; OCR is off"):
            parse_bytes(scanned_pdf_bytes(LINES), "application/pdf", "scan.pdf")
        with pytest.raises(PermanentError, match=r"OCR is off \(LOREBASE_PARSE__OCR=false\)"):
            parse_bytes(image_bytes(LINES), "image/png", "a.png")
        assert "Page one" in parse_bytes(pdf_bytes(["Page one."]), "application/pdf").text


def test_without_tesseract_an_image_fails_permanently_with_the_install_hint() -> None:
    with ocr.use_limits(OcrLimits(tesseract_cmd="/nonexistent/tesseract")):
        for data, media in ((image_bytes(LINES), "image/png"), (scanned_pdf_bytes(LINES), "application/pdf")):
            with pytest.raises(PermanentError) as err:
                parse_bytes(data, media, "x")
            assert "Tesseract is not installed" in err.value.message
            assert "(apt install tesseract-ocr tesseract-ocr-eng)" in err.value.message


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """100 megapixels of white: ~100 KB as PNG, 100 MB decoded."""
    out = io.BytesIO()
    Image.new("L", (10_000, 10_000), 255).save(out, "PNG", optimize=True)
    return out.getvalue()


def test_a_decompression_bomb_png_is_refused_before_decoding(bomb: bytes) -> None:
    assert len(bomb) < 1_000_000
    with (
        ocr.use_limits(OcrLimits(max_pixels=60_000_000)),
        pytest.raises(
            PermanentError, match="10000x10000 pixels, more than the 60,000,000 pixels OCR accepts"
        ),
    ):
        parse_bytes(bomb, "image/png", "bomb.png")
    # twice the cap and more: Pillow refuses it itself at open (MAX_IMAGE_PIXELS is the cap)
    with pytest.raises(
        PermanentError, match=r"^bomb.png refused as a possible decompression bomb: Image size"
    ):
        parse_bytes(bomb, "image/png", "bomb.png")


def test_a_tiff_with_more_pages_than_the_cap_is_refused() -> None:
    data = image_bytes([["one"], ["two"], ["three"]], "TIFF")
    with (
        ocr.use_limits(OcrLimits(max_pages=2)),
        pytest.raises(PermanentError, match=r"book.tif has 3 pages, more than the 2 OCR accepts"),
    ):
        parse_bytes(data, "image/tiff", "book.tif")


def test_a_scanned_pdf_page_is_rendered_below_the_pixel_cap() -> None:
    with ocr.use_limits(OcrLimits(dpi=600, max_pixels=2_000_000)):
        scale = ocr.render_scale(612, 792)
        assert 612 * 792 * scale**2 <= 2_000_000 < 612 * 792 * (600 / 72) ** 2
    assert text_image(["x"]).mode == "L"
