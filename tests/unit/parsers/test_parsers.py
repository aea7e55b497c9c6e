"""Parsers and media-type detection on real files built in the test (fpdf2, python-docx, HTML)."""

from __future__ import annotations

import io
import zipfile

import pytest
from docx import Document
from fpdf import FPDF

from lorebase.adapters.parsers.docx import DocxParser
from lorebase.adapters.parsers.html import HtmlParser
from lorebase.adapters.parsers.markdown import MarkdownParser, markdown_to_blocks
from lorebase.adapters.parsers.pdf import PdfParser
from lorebase.adapters.parsers.protocol import Parser
from lorebase.adapters.parsers.registry import (
    DOCX,
    SUPPORTED_MEDIA_TYPES,
    detect_media_type,
    parse_bytes,
)
from lorebase.adapters.parsers.text import TextParser, decode_text
from lorebase.errors import PermanentError, UnsupportedMediaType
from lorebase.pipeline.parse import parse

# -- builders ------------------------------------------------------------------------------------


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def make_docx() -> bytes:
    doc = Document()
    doc.add_paragraph("Quarterly Report", style="Title")
    doc.add_heading("Introduction", level=1)
    doc.add_paragraph("The introduction explains the goals.")
    doc.add_paragraph("first point", style="List Bullet")
    doc.add_paragraph("second point", style="List Bullet")
    doc.add_paragraph("a detail", style="List Bullet 2")
    doc.add_heading("Numbers", level=2)
    table = doc.add_table(rows=2, cols=3)
    for r, row in enumerate([["Region", "Sales", "Growth"], ["North", "120", "5%"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    doc.add_paragraph("The paragraph after the table.")
    doc.add_paragraph("step one", style="List Number")
    doc.add_paragraph("step two", style="List Number")
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def zip_bytes(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buf.getvalue()


LOREM = (
    "Widgets are small reusable components that make building dashboards much faster. "
    "They can be composed, themed and tested in isolation, which keeps large projects tidy. "
)

BIG_PAGE = f"""<!doctype html>
<html><head><title>Widget Guide - Acme Docs</title><meta property="og:title" content="Widget Guide"></head>
<body>
<header><div class="logo">Acme</div>
<nav><ul><li><a href="/">Home</a></li><li><a href="/docs">Docs</a></li><li><a href="/blog">Blog</a></li></ul></nav>
</header>
<div class="container">
<aside class="sidebar"><h3>Elsewhere</h3><ul><li><a href="/a">Sidebar link about pricing plans</a></li>
<li><a href="/b">Sidebar link about careers</a></li></ul></aside>
<main><article>
<h1 id="widget-guide">Widget Guide</h1>
<p>{LOREM * 3}</p>
<h2 id="install">Installation</h2>
<p>Install the package from the registry and then import it in your application entry point. {LOREM}</p>
<pre><code>pip install acme-widgets
acme init --force
</code></pre>
<h2><a name="options"></a>Options</h2>
<p>The following table lists the options that every widget accepts. {LOREM}</p>
<table><thead><tr><th>Name</th><th>Type</th><th>Default</th></tr></thead>
<tbody><tr><td>color</td><td>string</td><td>blue</td></tr><tr><td>size</td><td>int</td><td>12</td></tr></tbody>
</table>
<h3 id="advanced">Advanced usage</h3>
<ul><li>First item with <strong>bold</strong> text</li><li>Second item<ul><li>nested one</li></ul></li></ul>
<p>A final paragraph closes the article. {LOREM * 4}</p>
</article></main>
</div>
<footer><p>Copyright 2024 Acme Corp. All rights reserved. Footer text here.</p></footer>
<script>var leaked = "script content should vanish";</script>
</body></html>"""


# -- protocol ------------------------------------------------------------------------------------


def test_every_parser_meets_the_protocol() -> None:
    for parser in (TextParser(), MarkdownParser(), HtmlParser(), PdfParser(), DocxParser()):
        assert isinstance(parser, Parser)
        assert parser.media_types[0] in SUPPORTED_MEDIA_TYPES


# -- PDF -----------------------------------------------------------------------------------------


def test_pdf_text_comes_back_per_page_with_page_numbers() -> None:
    data = make_pdf(["Alpha page talks about apples.", "Beta page talks about bananas.", "Gamma cherries."])
    doc = PdfParser().parse(data, filename="fruit.pdf")
    assert doc.page_count == 3
    by_page = {b.page: b.text for b in doc.blocks}
    assert "apples" in by_page[1] and "bananas" in by_page[2] and "cherries" in by_page[3]
    assert all(b.kind == "paragraph" for b in doc.blocks)


def test_pdf_title_comes_from_metadata_or_is_none() -> None:
    assert PdfParser().parse(make_pdf(["Some text."], title="Fruit Facts")).title == "Fruit Facts"
    assert PdfParser().parse(make_pdf(["Some text."])).title is None


def test_corrupt_pdf_fails_with_readable_error() -> None:
    with pytest.raises(PermanentError, match=r"^could not read PDF: "):
        PdfParser().parse(b"%PDF-1.7\nthis is not really a pdf at all\n%%EOF")


def test_truncated_pdf_fails_with_readable_error() -> None:
    data = make_pdf(["One page of text.", "Another page."])
    with pytest.raises(PermanentError, match=r"^could not read PDF: "):
        PdfParser().parse(data[: len(data) // 2])


def test_pdf_without_text_layer_says_no_extractable_text() -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)
    with pytest.raises(PermanentError, match="no extractable text"):
        PdfParser().parse(bytes(pdf.output()))


# -- DOCX ----------------------------------------------------------------------------------------


def test_docx_keeps_headings_lists_and_tables_in_document_order() -> None:
    doc = DocxParser().parse(make_docx())
    kinds = [(b.kind, b.level, b.text) for b in doc.blocks]
    assert kinds == [
        ("heading", 1, "Quarterly Report"),
        ("heading", 1, "Introduction"),
        ("paragraph", 0, "The introduction explains the goals."),
        ("list", 0, "- first point\n- second point\n  - a detail"),
        ("heading", 2, "Numbers"),
        ("table", 0, "Region | Sales | Growth\nNorth | 120 | 5%"),
        ("paragraph", 0, "The paragraph after the table."),
        ("list", 0, "1. step one\n2. step two"),
    ]


def test_docx_title_prefers_core_properties_then_title_style() -> None:
    assert DocxParser().parse(make_docx()).title == "Quarterly Report"
    document = Document()
    document.core_properties.title = "Official Title"
    document.add_paragraph("Body text.")
    buf = io.BytesIO()
    document.save(buf)
    assert DocxParser().parse(buf.getvalue()).title == "Official Title"


def test_docx_that_is_not_a_zip_fails_with_readable_error() -> None:
    with pytest.raises(PermanentError, match=r"^could not read DOCX: .*not a zip archive"):
        DocxParser().parse(b"definitely not a word document")


def test_zip_without_word_parts_fails_as_docx_with_readable_error() -> None:
    with pytest.raises(PermanentError, match=r"^could not read DOCX: "):
        DocxParser().parse(zip_bytes({"notes.txt": "hello"}))


# -- Markdown ------------------------------------------------------------------------------------

MARKDOWN = """---
title: Front Matter Title
---
# Project Guide

Intro with *emphasis* and `code`,
wrapped over two lines.

## Setup

- install it
- configure it
  - nested detail
1. first
2. second

| Name | Value |
|------|-------|
| a    | 1     |

```python
def main():
    return 1
```

    indented code
"""


def test_markdown_becomes_headings_lists_tables_and_code() -> None:
    doc = MarkdownParser().parse(MARKDOWN.encode())
    assert doc.title == "Project Guide"
    assert [(b.kind, b.level) for b in doc.blocks] == [
        ("heading", 1),
        ("paragraph", 0),
        ("heading", 2),
        ("list", 0),
        ("list", 0),
        ("table", 0),
        ("code", 0),
        ("code", 0),
    ]
    texts = [b.text for b in doc.blocks]
    assert texts[1] == "Intro with emphasis and code, wrapped over two lines."
    assert texts[3] == "- install it\n- configure it\n  - nested detail"
    assert texts[4] == "1. first\n2. second"
    assert texts[5] == "Name | Value\na | 1"
    assert texts[6] == "def main():\n    return 1"
    assert texts[7] == "indented code"


def test_markdown_title_falls_back_to_front_matter_then_none() -> None:
    assert MarkdownParser().parse(b"---\ntitle: Notes\n---\nJust text.").title == "Notes"
    assert MarkdownParser().parse(b"## Only a subheading\n\ntext").title is None


def test_markdown_to_blocks_keeps_ordered_list_start() -> None:
    assert markdown_to_blocks("3. three\n4. four")[0].text == "3. three\n4. four"


def test_empty_markdown_has_no_extractable_text() -> None:
    with pytest.raises(PermanentError, match="no extractable text"):
        MarkdownParser().parse(b"   \n\n")


# -- HTML ----------------------------------------------------------------------------------------


#: the same page without an author-declared main element (div soup, as on many sites)
BIG_PAGE_NO_MAIN = BIG_PAGE.replace("<main><article>", '<div class="content"><div>').replace(
    "</article></main>", "</div></div>"
)


@pytest.mark.parametrize(
    ("page", "extractor"),
    [(BIG_PAGE, "dom"), (BIG_PAGE_NO_MAIN, "trafilatura")],
    ids=["explicit-main-dom-walk", "div-soup-trafilatura"],
)
def test_html_keeps_main_content_structure_and_drops_boilerplate(page: str, extractor: str) -> None:
    doc = HtmlParser().parse(page.encode())
    assert doc.metadata["extractor"] == extractor
    text = doc.text
    for junk in ("Home", "Sidebar link", "Copyright 2024", "script content", "Elsewhere"):
        assert junk not in text
    headings = [(b.level, b.text, b.anchor) for b in doc.blocks if b.kind == "heading"]
    assert headings == [
        (1, "Widget Guide", "widget-guide"),
        (2, "Installation", "install"),
        (2, "Options", "options"),
        (3, "Advanced usage", "advanced"),
    ]
    code = [b.text for b in doc.blocks if b.kind == "code"]
    assert code == ["pip install acme-widgets\nacme init --force"]
    tables = [b.text for b in doc.blocks if b.kind == "table"]
    assert tables == ["Name | Type | Default\ncolor | string | blue\nsize | int | 12"]
    lists = [b.text for b in doc.blocks if b.kind == "list"]
    assert lists == ["- First item with bold text\n- Second item\n  - nested one"]
    assert doc.title == "Widget Guide - Acme Docs"


def test_tiny_html_page_still_yields_its_text() -> None:
    page = b"<html><head><title>Tiny</title></head><body><p>Hello world.</p><pre>a = 1\nb = 2</pre></body></html>"
    doc = HtmlParser().parse(page)
    assert doc.metadata["extractor"] == "dom"
    assert doc.title == "Tiny"
    assert [(b.kind, b.text) for b in doc.blocks] == [("paragraph", "Hello world."), ("code", "a = 1\nb = 2")]


def test_small_html_page_drops_navigation_around_main() -> None:
    page = b"<html><body><nav><a href='/'>Home</a></nav><main><h1>Notes</h1><p>Hi.</p></main><footer>Foot</footer>"
    doc = HtmlParser().parse(page)
    assert [b.text for b in doc.blocks] == ["Notes", "Hi."]
    assert doc.title == "Notes"


def test_html_heading_anchor_comes_from_its_section_and_permalink_marks_are_dropped() -> None:
    page = (
        "<html><body><div role='main'><section id='installing'><a href='src'>Source</a>"
        "<h2>Installing<a class='headerlink' href='#installing'>\u00b6</a></h2><p>Run the installer.</p>"
        "<a href='#x'>\u00a7</a></section></div></body></html>"
    )
    doc = HtmlParser().parse(page.encode())
    assert [(b.kind, b.text, b.anchor) for b in doc.blocks] == [
        ("paragraph", "Source", None),
        ("heading", "Installing", "installing"),
        ("paragraph", "Run the installer.", None),
    ]


def test_html_source_line_breaks_are_spaces_but_br_breaks_lines() -> None:
    doc = HtmlParser().parse(b"<p>one\ntwo<br>three</p>")
    assert doc.blocks[0].text == "one two\nthree"


def test_html_without_charset_is_read_as_utf8() -> None:
    doc = HtmlParser().parse("<p>Café crème — naïve</p>".encode())
    assert doc.blocks[0].text == "Café crème — naïve"


def test_empty_html_has_no_extractable_text() -> None:
    with pytest.raises(PermanentError, match="no extractable text"):
        HtmlParser().parse(b"<html><body><script>x()</script></body></html>")


# -- plain text ----------------------------------------------------------------------------------


def test_plain_text_splits_paragraphs_on_blank_lines() -> None:
    doc = TextParser().parse(b"First para\nstill first.\n\n  \nSecond para.\r\n\r\nThird.")
    assert doc.title is None
    assert [b.text for b in doc.blocks] == ["First para\nstill first.", "Second para.", "Third."]


def test_text_decoding_handles_bom_latin1_and_broken_utf8() -> None:
    assert decode_text("\ufeffhé".encode()) == "hé"
    assert decode_text("héllo wörld".encode("latin-1")) == "héllo wörld"
    assert decode_text("naïve café résumé".encode() + b"\xff") == "naïve café résumé\ufffd"
    assert decode_text("hi".encode("utf-16")) == "hi"


# -- detection -----------------------------------------------------------------------------------


def test_magic_bytes_win_over_name_and_declared_type() -> None:
    assert detect_media_type(make_pdf(["x"]), "notes.txt", "text/plain") == "application/pdf"
    assert detect_media_type(make_docx(), "upload.bin", "application/octet-stream") == DOCX


def test_pdf_named_garbage_is_detected_as_pdf_and_fails_at_parse() -> None:
    garbage = b"\x00\x01\x02 this is junk" * 10
    media_type = detect_media_type(garbage, "report.pdf")
    assert media_type == "application/pdf"
    with pytest.raises(PermanentError, match="could not read PDF"):
        parse_bytes(garbage, media_type, "report.pdf")


def test_binary_junk_is_unsupported() -> None:
    elf = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64
    with pytest.raises(UnsupportedMediaType, match="unsupported file type"):
        detect_media_type(elf, "program")
    with pytest.raises(UnsupportedMediaType, match="unsupported file type"):
        detect_media_type(b"abc\x00\x01\x02def" * 20, "data.txt")


def test_zip_that_is_not_docx_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType, match="zip archive"):
        detect_media_type(zip_bytes({"a.txt": "hello"}), "archive.zip")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("notes.txt", "text/plain"),
        ("README.md", "text/markdown"),
        ("guide.markdown", "text/markdown"),
        ("page.HTM", "text/html"),
        ("index.html", "text/html"),
        ("paper.pdf", "application/pdf"),
        ("letter.docx", DOCX),
    ],
)
def test_extension_decides_for_text_without_magic(name: str, expected: str) -> None:
    assert detect_media_type(b"plain words", name) == expected


def test_declared_type_then_sniffing_decide_for_unnamed_text() -> None:
    assert detect_media_type(b"# Title", None, "text/markdown; charset=utf-8") == "text/markdown"
    assert detect_media_type(b"<!DOCTYPE html><html><body>x</body></html>", None) == "text/html"
    assert detect_media_type(b"  <div>hello</div>", "upload") == "text/html"
    assert detect_media_type(b"just some words", None, "application/octet-stream") == "text/plain"
    assert detect_media_type("hi there".encode("utf-16"), None) == "text/plain"


def test_parse_stage_dispatches_on_media_type() -> None:
    assert parse is parse_bytes
    doc = parse(b"# Hello\n\nWorld", "text/markdown", "a.md")
    assert [b.kind for b in doc.blocks] == ["heading", "paragraph"]
    with pytest.raises(UnsupportedMediaType):
        parse(b"x", "image/gif")
