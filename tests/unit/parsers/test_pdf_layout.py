"""PDF layout on files made by fpdf2: headings, running headers, two columns, tables, pages."""

from __future__ import annotations

import pytest
from fpdf import FPDF
from tokenizers import Tokenizer

from lorebase.adapters.embedders.local import load_tokenizer
from lorebase.adapters.parsers.document import ParsedDocument
from lorebase.adapters.parsers.pdf import PdfParser
from lorebase.errors import PermanentError
from lorebase.pipeline.chunk import chunk
from lorebase.pipeline.types import ChunkDraft, ChunkingConfig

LEFT = [f"Left sentence {n} tells of the western valley." for n in range(1, 9)]
RIGHT = [f"Right sentence {n} tells of the eastern ridge." for n in range(1, 9)]


class _Handbook(FPDF):
    def header(self) -> None:
        self.set_font("Helvetica", size=8)
        self.set_y(6)
        self.cell(0, 5, "ACME Field Handbook - internal", align="C")
        self.set_y(20)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=8)
        self.cell(0, 5, str(self.page_no()), align="C")


def _heading(pdf: FPDF, text: str, size: int) -> None:
    pdf.set_font("Helvetica", "B", size)
    pdf.multi_cell(0, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)


def _para(pdf: FPDF, text: str) -> None:
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 5.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)


def _table(pdf: FPDF, rows: list[list[str]]) -> None:
    pdf.set_font("Helvetica", size=10)
    with pdf.table() as table:  # the heading row is repeated on each page, as in most documents
        for values in rows:
            row = table.row()
            for value in values:
                row.cell(value)
    pdf.ln(4)


def handbook_pdf() -> bytes:
    pdf = _Handbook()
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    _heading(pdf, "Installation Guide", 20)
    _para(pdf, "This handbook explains how the pumps are installed in the field. " * 3)
    _heading(pdf, "Requirements", 14)
    _para(pdf, "A pump needs a level concrete base and a dry electrical cabinet. " * 3)
    _table(
        pdf, [["Model", "Voltage", "Flow"], ["P-100", "230 V", "40 l/min"], ["P-200", "400 V", "95 l/min"]]
    )
    _para(pdf, "The paragraph after the table talks about anchoring bolts.")
    pdf.add_page()
    _heading(pdf, "Terrain", 14)
    top = pdf.get_y()
    pdf.set_font("Helvetica", size=11)
    pdf.set_xy(10, top)
    pdf.multi_cell(88, 5.5, " ".join(LEFT))
    pdf.set_xy(112, top)
    pdf.multi_cell(88, 5.5, " ".join(RIGHT))
    pdf.add_page()
    _heading(pdf, "Spare Parts", 14)
    _table(
        pdf,
        [["Part", "Number", "Price"]]
        + [[f"gasket size {n}", f"GS-{n:03}", f"{n}.50 EUR"] for n in range(70)],
    )
    return bytes(pdf.output())


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def doc() -> ParsedDocument:
    return PdfParser().parse(handbook_pdf(), filename="handbook.pdf")


@pytest.fixture(scope="module")
def chunks(doc: ParsedDocument, tok: Tokenizer) -> list[ChunkDraft]:
    return chunk(
        doc, ChunkingConfig(strategy="structure", chunk_size=200, chunk_overlap=20), tok, max_tokens=256
    )


def test_headings_from_font_size_and_weight_make_the_section_path(doc: ParsedDocument) -> None:
    headings = [(b.text, b.level) for b in doc.blocks if b.kind == "heading"]
    assert [text for text, _ in headings] == ["Installation Guide", "Requirements", "Terrain", "Spare Parts"]
    assert headings[0][1] < headings[1][1]


def test_chunks_carry_the_section_of_the_headings_before_them(chunks: list[ChunkDraft]) -> None:
    by_text = {c.text: c.metadata["section"] for c in chunks}
    pumps = next(s for t, s in by_text.items() if "pumps are installed" in t)
    cabinet = next(s for t, s in by_text.items() if "electrical cabinet" in t)
    assert pumps == ["Installation Guide"]
    assert cabinet == ["Installation Guide", "Requirements"]


def test_running_header_footer_and_page_numbers_are_dropped(chunks: list[ChunkDraft]) -> None:
    text = "\n".join(c.text for c in chunks)
    assert "ACME Field Handbook" not in text
    assert all(line.strip() not in {"1", "2", "3", "4", "5"} for c in chunks for line in c.text.split("\n"))


def test_two_columns_are_read_left_then_right(chunks: list[ChunkDraft]) -> None:
    text = " ".join(c.text.replace("\n", " ") for c in chunks)
    positions = [text.index(s.split(" tells")[0]) for s in LEFT + RIGHT]
    assert positions == sorted(positions)


def test_tables_are_table_chunks_with_their_header_and_not_repeated_as_text(
    doc: ParsedDocument, chunks: list[ChunkDraft]
) -> None:
    small = [b for b in doc.blocks if "P-100" in b.text]
    assert [(b.kind, b.header_rows, b.text) for b in small] == [
        ("table", 1, "Model | Voltage | Flow\nP-100 | 230 V | 40 l/min\nP-200 | 400 V | 95 l/min")
    ]
    assert sum(c.text.count("P-100") for c in chunks) == 1
    assert {c.metadata["type"] for c in chunks if "gasket" in c.text} == {"table"}


def test_a_long_table_is_split_with_its_header_repeated_and_no_row_cut(chunks: list[ChunkDraft]) -> None:
    parts = [c for c in chunks if c.metadata["type"] == "table" and "gasket" in c.text]
    assert len(parts) >= 2
    rows: list[str] = []
    for part in parts:
        lines = [ln for ln in part.text.splitlines() if "|" in ln]
        assert lines[0] == "Part | Number | Price"
        rows += lines[1:]
    assert rows == [f"gasket size {n} | GS-{n:03} | {n}.50 EUR" for n in range(70)]


def test_every_chunk_has_a_page(chunks: list[ChunkDraft]) -> None:
    assert all(isinstance(c.metadata.get("page"), int) for c in chunks)
    terrain = next(c for c in chunks if "Left sentence 1 " in c.text)
    assert terrain.metadata["page"] == 2


def test_pages_without_text_are_skipped_and_the_others_keep_their_page_numbers() -> None:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in ["Apples grow on trees.", None, "Cherries are red."]:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
        else:
            pdf.rect(10, 10, 50, 50)  # a drawing, no text layer
    doc = PdfParser().parse(bytes(pdf.output()))
    assert [(b.page, b.text) for b in doc.blocks] == [(1, "Apples grow on trees."), (3, "Cherries are red.")]
    assert doc.page_count == 3


def test_thousands_of_empty_pages_fail_with_no_extractable_text() -> None:
    pdf = FPDF()
    for _ in range(3000):
        pdf.add_page()
    with pytest.raises(PermanentError, match=r"^no extractable text: the PDF has 3000 page\(s\)"):
        PdfParser().parse(bytes(pdf.output()))
