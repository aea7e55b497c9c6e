"""PPTX, XLSX, CSV, EPUB and e-mail, on files written by real tools (python-pptx, openpyxl, the
csv module, ebooklib, the email package): structure, slide numbers, header repetition, the row
cap, attachments, detection."""

from __future__ import annotations

import io
import time

import pytest
from openpyxl import Workbook
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from factories import csv_bytes, eml_bytes, epub_bytes, pptx_bytes, xlsx_bytes
from lorebase.adapters.embedders.local import load_tokenizer
from lorebase.adapters.parsers import tables
from lorebase.adapters.parsers.document import Block
from lorebase.adapters.parsers.registry import (
    CSV,
    EML,
    EPUB,
    PLAIN,
    PPTX,
    SUPPORTED_MEDIA_TYPES,
    XLSX,
    detect_media_type,
    parse_bytes,
)
from lorebase.errors import PermanentError, UnsupportedMediaType
from lorebase.pipeline.chunk import chunk, count_tokens
from lorebase.pipeline.types import ChunkingConfig

DECK = pptx_bytes(
    [
        (
            "Harvest plan",
            ["Pick apples in October", "Press cider in November"],
            "Remind everyone about the frost.",
        ),
        (None, ["A slide without a title"], None),
    ],
    table=[["Orchard", "Trees"], ["North", "120"], ["South", "80"]],
)
SALES = [["Region", "Units", "Price"], *[[f"Region {i}", i * 3, 1.5 * i] for i in range(70)]]
BOOK = xlsx_bytes({"Sales": SALES, "Staff": [["Name", "Role"], ["Ada", "Engineer"]]}, title="Figures")


def _texts(blocks: list[Block]) -> list[tuple[str, str]]:
    return [(b.kind, b.text) for b in blocks]


# -- PPTX ------------------------------------------------------------------------------------------


def test_pptx_is_one_section_per_slide_with_notes_and_tables_and_slide_numbers() -> None:
    assert detect_media_type(DECK, "deck.pptx") == PPTX
    assert detect_media_type(DECK, None, "application/octet-stream") == PPTX  # by its zip directory
    doc = parse_bytes(DECK, PPTX, "deck.pptx")
    assert doc.title == "Harvest plan" and doc.page_count == 3
    assert _texts(doc.blocks) == [
        ("heading", "Harvest plan"),
        ("paragraph", "Pick apples in October\nPress cider in November"),
        ("paragraph", "Notes: Remind everyone about the frost."),
        ("heading", "Slide 2"),
        ("paragraph", "A slide without a title"),
        ("heading", "Slide 3"),
        ("table", "Orchard | Trees\nNorth | 120\nSouth | 80"),
    ]
    assert [b.page for b in doc.blocks] == [1, 1, 1, 2, 2, 3, 3]


def test_pptx_chunks_cite_their_slide_and_tables_are_typed() -> None:
    doc = parse_bytes(DECK, PPTX)
    chunks = chunk(
        doc, ChunkingConfig(strategy="structure"), load_tokenizer("all-MiniLM-L6-v2"), max_tokens=256
    )
    assert [(c.metadata["page"], c.metadata["type"]) for c in chunks] == [
        (1, "text"),
        (2, "text"),
        (3, "table"),
    ]


def test_a_damaged_pptx_fails_readably() -> None:
    damaged = DECK[: len(DECK) // 2]
    assert detect_media_type(damaged, "deck.pptx") == PPTX  # the name decides for a damaged zip
    with pytest.raises(PermanentError, match=r"^could not read PPTX: "):
        parse_bytes(damaged, PPTX, "deck.pptx")


# -- XLSX --------------------------------------------------------------------------------------------


def test_xlsx_sheets_are_sections_and_the_header_opens_every_table_block() -> None:
    assert detect_media_type(BOOK, "figures.xlsx") == XLSX
    doc = parse_bytes(BOOK, XLSX, "figures.xlsx")
    assert doc.title == "Figures"
    assert doc.metadata == {"rows": 73}
    headings = [b.text for b in doc.blocks if b.kind == "heading"]
    assert headings == ["Sales", "Staff"]
    sales = [b for b in doc.blocks if b.kind == "table"][:-1]
    assert len(sales) == 3  # 70 rows in blocks of at most 30
    for block in sales:
        lines = block.text.split("\n")
        assert lines[0] == "Region | Units | Price" and block.header_rows == 1
        assert 1 < len(lines) <= tables.ROWS_PER_BLOCK + 1
    body = [line for b in sales for line in b.text.split("\n")[1:]]
    assert body[:3] == ["Region 0 | 0 | 0", "Region 1 | 3 | 1.5", "Region 2 | 6 | 3"]  # numbers as numbers
    assert len(body) == 70 and body[-1] == "Region 69 | 207 | 103.5"
    assert doc.blocks[-1].text == "Name | Role\nAda | Engineer"


def _byte_level_bpe() -> Tokenizer:
    """A tokenizer whose counts do not add up over lines (it has tokens for "\n")."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(
        [f"Region {i} north | {i * 7} | Person number {i}\n" for i in range(200)], trainer=trainer
    )
    return bpe


@pytest.mark.parametrize("tokenizer", ["minilm", "byte-level-bpe"])
def test_a_table_cut_by_the_chunker_keeps_whole_rows_and_repeats_the_header(tokenizer: str) -> None:
    tok = load_tokenizer("all-MiniLM-L6-v2") if tokenizer == "minilm" else _byte_level_bpe()
    size = 64 if tokenizer == "minilm" else 128  # the toy BPE spends 32 tokens on the header
    rows = [["Region name", "Units sold", "Representative"]]
    rows += [[f"Region {i} north", i * 7, f"Person number {i} with a long name"] for i in range(60)]
    doc = parse_bytes(xlsx_bytes({"Sales": rows}), XLSX)
    every_row = {" | ".join(str(v) for v in row) for row in rows[1:]}
    for strategy in ("recursive", "structure"):
        cfg = ChunkingConfig(strategy=strategy, chunk_size=size, chunk_overlap=16)
        chunks = chunk(doc, cfg, tok, max_tokens=256)
        assert len(chunks) > 10
        seen: list[str] = []
        for c, n in zip(chunks, count_tokens(tok, [c.text for c in chunks]), strict=True):
            assert c.token_count == n <= size
            assert c.metadata["type"] == "table"
            lines = [line for line in c.text.split("\n") if line and line != "Sales"]
            assert lines[0] == "Region name | Units sold | Representative"
            assert lines.count(lines[0]) == 1  # the header once per chunk
            assert set(lines[1:]) <= every_row  # whole rows only
            seen += lines[1:]
        assert sorted(seen) == sorted(every_row)  # every row once: no overlap carried into a table


def test_the_row_cap_drops_the_rest_of_the_file_and_says_so() -> None:
    with tables.use_max_rows(50):
        doc = parse_bytes(BOOK, XLSX)
    body = [line for b in doc.blocks if b.kind == "table" for line in b.text.split("\n")[1:]]
    assert len(body) == 49 and body[-1] == "Region 48 | 144 | 72"  # 50 rows: the header and 49
    assert [b.text for b in doc.blocks if b.kind == "heading"] == ["Sales"]
    assert doc.metadata["rows"] == 50 and doc.metadata["rows_dropped"] is True
    assert doc.metadata["warnings"] == [
        "only the first 50 table rows were indexed (from sheet Sales, Staff); "
        "the rest of the file was dropped (parse.max_table_rows)"
    ]
    assert "warnings" not in parse_bytes(BOOK, XLSX).metadata  # the default cap is 100,000


def test_an_xlsx_with_a_cell_at_row_a_million_parses_fast_without_the_empty_rows() -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["Item", "Count"])
    sheet.append(["Pears", 4])
    sheet.cell(row=1_000_000, column=16_000, value="far away")  # dimension A1:WQJ1000000
    buf = io.BytesIO()
    book.save(buf)
    started = time.perf_counter()
    doc = parse_bytes(buf.getvalue(), XLSX)
    assert time.perf_counter() - started < 2.0
    assert _texts(doc.blocks) == [("heading", "Sheet"), ("table", "Item | Count\nPears | 4")]


def test_an_empty_workbook_has_no_extractable_text() -> None:
    with pytest.raises(PermanentError, match="no extractable text: the XLSX file has no non-empty cells"):
        parse_bytes(xlsx_bytes({"Empty": []}), XLSX)


# -- CSV ---------------------------------------------------------------------------------------------


def test_csv_is_a_table_under_its_file_name_with_a_sniffed_dialect() -> None:
    rows = [["city", "population", "note"], ["Oslo", 709000, "capital; fjord"], ["Bergen, NO", 291000, ""]]
    for delimiter in (",", ";", "\t"):
        data = csv_bytes(rows, delimiter=delimiter)
        assert detect_media_type(data, "cities.csv") == CSV
        doc = parse_bytes(data, CSV, "cities.csv")
        assert _texts(doc.blocks) == [
            ("heading", "cities"),
            ("table", "city | population | note\nOslo | 709000 | capital; fjord\nBergen, NO | 291000"),
        ], delimiter
    assert detect_media_type(csv_bytes(rows), "cities.tsv") == CSV
    assert detect_media_type(csv_bytes(rows), "upload", "text/csv; charset=utf-8") == CSV
    assert detect_media_type(csv_bytes(rows), "upload") == PLAIN  # CSV is never sniffed


def test_csv_in_a_legacy_encoding_decodes_like_a_text_file() -> None:
    data = csv_bytes([["Stadt", "Straße"], ["Köln", "Hohe Straße"]], encoding="cp1252")
    doc = parse_bytes(data, CSV, "städte.csv")
    assert doc.blocks[1].text == "Stadt | Straße\nKöln | Hohe Straße"


def test_csv_row_cap_and_header_repetition() -> None:
    rows = [["id", "value"], *[[i, f"v{i}"] for i in range(100)]]
    with tables.use_max_rows(40):
        doc = parse_bytes(csv_bytes(rows), CSV, "values.csv")
    blocks = [b for b in doc.blocks if b.kind == "table"]
    assert [len(b.text.split("\n")) for b in blocks] == [31, 10]
    assert all(b.text.startswith("id | value\n") for b in blocks)
    assert doc.metadata["warnings"][0].startswith(
        "only the first 40 table rows were indexed (from sheet values)"
    )


def test_a_csv_field_over_the_csv_module_limit_fails_readably() -> None:
    data = b'a,b\n1,"' + b"x" * 200_000 + b'"\n'
    with pytest.raises(PermanentError, match=r"^could not read CSV: field larger than field limit"):
        parse_bytes(data, CSV, "big.csv")


# -- EPUB --------------------------------------------------------------------------------------------


def test_epub_chapters_in_spine_order_through_the_html_block_walk() -> None:
    data = epub_bytes(
        "Sea Tales",
        [
            (
                "The Harbour",
                "<h1>The Harbour</h1><p>Boats rest here.</p><ul><li>sloops</li><li>ketches</li></ul>",
            ),
            (
                "Open Water",
                "<p>The whale sang at dawn.</p><table><tr><th>Fish</th><th>Depth</th></tr>"
                "<tr><td>Cod</td><td>200 m</td></tr></table>",
            ),
        ],
    )
    assert detect_media_type(data, "sea.epub") == EPUB
    assert detect_media_type(data, None) == EPUB
    doc = parse_bytes(data, EPUB, "sea.epub")
    assert doc.title == "Sea Tales"
    assert _texts(doc.blocks) == [
        ("heading", "The Harbour"),
        ("paragraph", "Boats rest here."),
        ("list", "- sloops\n- ketches"),
        ("heading", "Open Water"),  # no heading of its own: the chapter's <title>
        ("paragraph", "The whale sang at dawn."),
        ("table", "Fish | Depth\nCod | 200 m"),
    ]


def test_epub_entity_declarations_are_refused_but_a_plain_doctype_is_not() -> None:
    import zipfile

    good = epub_bytes("Book", [("One", "<h1>One</h1><p>Plain text.</p>")])

    def rewritten(change: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(buf, "w") as out:
            for item in source.infolist():
                part = source.read(item)
                if item.filename.endswith("chapter_1.xhtml"):
                    part = part.replace(b"<!DOCTYPE html>", change, 1)
                out.writestr(item, part)
        return buf.getvalue()

    legacy = (
        b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">'
    )
    assert [b.text for b in parse_bytes(rewritten(legacy), EPUB).blocks] == ["One", "Plain text."]
    laughs = b'<!DOCTYPE html [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    with pytest.raises(
        PermanentError,
        match=r"refused: the EPUB contains XML entity declarations .* in EPUB/chapter_1\.xhtml$",
    ):
        parse_bytes(rewritten(laughs), EPUB)


# -- e-mail ------------------------------------------------------------------------------------------


def test_eml_headers_are_metadata_the_body_blocks_and_attachments_are_listed_not_parsed() -> None:
    data = eml_bytes(
        "Lunch plans",
        "Let's meet at noon.\n\nBring the blue folder.",
        attachments=[("menu.pdf", "application/pdf", b"%PDF-1.4 " + b"x" * 100)],
    )
    assert detect_media_type(data, "lunch.eml") == EML
    assert detect_media_type(data, "message", "application/octet-stream") == EML  # sniffed headers
    doc = parse_bytes(data, EML, "lunch.eml")
    assert doc.title == "Lunch plans"
    assert _texts(doc.blocks) == [
        ("paragraph", "Let's meet at noon."),
        ("paragraph", "Bring the blue folder."),
    ]
    assert doc.metadata == {
        "from": "Ada Lovelace <ada@example.org>",
        "to": "Charles Babbage <charles@example.org>",
        "subject": "Lunch plans",
        "date": "Mon, 07 Dec 2026 10:00:00 +0000",
        "attachments": [{"filename": "menu.pdf", "content_type": "application/pdf", "size": 109}],
        "warnings": ["1 attachment(s) not indexed (menu.pdf): attachments are not parsed yet"],
    }
    assert "PDF" not in doc.text


def test_eml_prefers_plain_text_and_falls_back_to_html() -> None:
    both = eml_bytes("Both", "The plain version.", html="<p>The <b>HTML</b> version.</p>")
    assert parse_bytes(both, EML).text == "The plain version."
    html_only = eml_bytes(
        "Only HTML", "", html="<html><body><h2>Agenda</h2><p>Budget review.</p></body></html>"
    )
    doc = parse_bytes(html_only, EML)
    assert _texts(doc.blocks) == [("heading", "Agenda"), ("paragraph", "Budget review.")]
    assert "attachments" not in doc.metadata


def test_a_text_file_that_merely_mentions_a_header_is_not_an_email() -> None:
    assert detect_media_type(b"From: the author\nA note about things.\n", None) == PLAIN
    assert detect_media_type(b"Subject: hi\nFrom: me\n\nbody", None) == EML


# -- registry ----------------------------------------------------------------------------------------


def test_the_new_types_are_supported_and_an_unknown_zip_is_refused() -> None:
    import zipfile

    assert {PPTX, XLSX, CSV, EPUB, EML} <= set(SUPPORTED_MEDIA_TYPES)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        out.writestr("readme.txt", "hello")
    with pytest.raises(UnsupportedMediaType, match="not a Word, PowerPoint, Excel or EPUB document"):
        detect_media_type(buf.getvalue(), "archive.zip")


def test_a_drm_encrypted_epub_fails_readably() -> None:
    import zipfile

    good = epub_bytes("Locked", [("One", "<h1>One</h1><p>Secret text.</p>")])
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(buf, "w") as out:
        for item in source.infolist():
            out.writestr(item, source.read(item))
        out.writestr(
            "META-INF/encryption.xml",
            '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
            'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
            '<enc:CipherData><enc:CipherReference URI="EPUB/chapter_1.xhtml"/></enc:CipherData>'
            "</enc:EncryptedData></encryption>",
        )
    with pytest.raises(PermanentError, match=r"^could not read EPUB: its chapters are encrypted \(DRM\)"):
        parse_bytes(buf.getvalue(), EPUB)


def test_the_cli_ingests_a_folder_by_the_parsers_own_extensions() -> None:
    from lorebase.adapters.parsers.registry import SUPPORTED_EXTENSIONS
    from lorebase.cli.paths import SUFFIXES

    assert SUFFIXES == SUPPORTED_EXTENSIONS
