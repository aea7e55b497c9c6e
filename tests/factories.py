"""Small factories for real files of every supported format (made on the fly, nothing mocked)."""

from __future__ import annotations

import io
from typing import Any

from docx import Document as DocxDocument
from fpdf import FPDF


def pdf_bytes(pages: list[str], title: str | None = None) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def docx_bytes(title: str, sections: list[tuple[str, str]], table: list[list[str]] | None = None) -> bytes:
    doc = DocxDocument()
    doc.add_heading(title, level=1)
    for heading, para in sections:
        doc.add_heading(heading, level=2)
        doc.add_paragraph(para)
    if table:
        t = doc.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                t.cell(r, c).text = cell
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def html_page(title: str, heading: str, body: str) -> bytes:
    return f"""<!doctype html><html><head><title>{title}</title></head><body>
<nav><a href="/">Home</a> <a href="/about">About us</a> <a href="/contact">Contact</a></nav>
<aside class="sidebar"><ul><li>Related: weather</li><li>Related: climate</li></ul></aside>
<main><article><h1>{title}</h1><h2 id="details">{heading}</h2><p>{body}</p>
<table><tr><th>Layer</th><th>Depth</th></tr><tr><td>Crust</td><td>35 km</td></tr></table>
<pre><code>measure --depth 35</code></pre></article></main>
<footer>Copyright 2026 Example Org. All rights reserved.</footer></body></html>""".encode()


def pptx_bytes(
    slides: list[tuple[str | None, list[str], str | None]], table: list[list[str]] | None = None
) -> bytes:
    """A python-pptx deck: per slide (title or None, body lines, speaker notes or None); ``table``
    goes on one more slide, without a title."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    deck.core_properties.title = ""
    for title, lines, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1 if title else 6])
        if title:
            slide.shapes.title.text = title
            slide.placeholders[1].text = "\n".join(lines)
        elif lines:
            box = slide.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(2))
            box.text_frame.text = "\n".join(lines)
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    if table:
        slide = deck.slides.add_slide(deck.slide_layouts[6])
        shape = slide.shapes.add_table(len(table), len(table[0]), Inches(1), Inches(1), Inches(6), Inches(3))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                shape.table.cell(r, c).text = value
    buf = io.BytesIO()
    deck.save(buf)
    return buf.getvalue()


def xlsx_bytes(sheets: dict[str, list[list[object]]], title: str | None = None) -> bytes:
    """An openpyxl workbook with one sheet per entry (rows as given: numbers stay numbers)."""
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    if title:
        book.properties.title = title
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def csv_bytes(rows: list[list[object]], delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    import csv

    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter).writerows(rows)
    return buf.getvalue().encode(encoding)


def epub_bytes(title: str, chapters: list[tuple[str, str]]) -> bytes:
    """An ebooklib book: chapters as (title, XHTML body), in spine order after the nav page."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier(f"urn:test:{title}")
    book.set_title(title)
    book.set_language("en")
    items = []
    for i, (name, body) in enumerate(chapters, 1):
        item = epub.EpubHtml(title=name, file_name=f"chapter_{i}.xhtml", lang="en")
        item.content = body
        book.add_item(item)
        items.append(item)
    book.toc = tuple(items)
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    buf = io.BytesIO()
    epub.write_epub(buf, book)
    return buf.getvalue()


def eml_bytes(
    subject: str,
    body: str,
    *,
    html: str | None = None,
    attachments: list[tuple[str, str, bytes]] | None = None,
) -> bytes:
    """A stdlib ``email`` message; ``html`` adds an HTML alternative (or is the only body when
    ``body`` is empty); attachments are (filename, content type, bytes)."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "Ada Lovelace <ada@example.org>"
    msg["To"] = "Charles Babbage <charles@example.org>"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    if body:
        msg.set_content(body)
        if html:
            msg.add_alternative(html, subtype="html")
    elif html:
        msg.set_content(html, subtype="html")
    for filename, content_type, data in attachments or []:
        maintype, subtype = content_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


#: a TrueType font every Debian machine with fontconfig has (fonts-dejavu-core)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def text_image(lines: list[str], size: int = 44, width: int = 1800) -> Any:
    """A white grayscale page with ``lines`` drawn in black with a TrueType font (a clean scan)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(FONT, size)
    image = Image.new("L", (width, 120 + int(size * 1.6) * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 60 + int(size * 1.6) * i), line, font=font, fill=0)
    return image


def image_bytes(lines: list[str] | list[list[str]], fmt: str = "PNG") -> bytes:
    """``lines`` rendered by :func:`text_image` and saved by Pillow as ``fmt`` (PNG, JPEG, TIFF;
    a list of pages makes a multi-page TIFF)."""
    pages = [text_image(p) for p in lines] if lines and isinstance(lines[0], list) else [text_image(lines)]  # type: ignore[arg-type]
    out = io.BytesIO()
    pages[0].save(out, fmt, save_all=len(pages) > 1, append_images=pages[1:])
    return out.getvalue()


def scanned_pdf_bytes(lines: list[str]) -> bytes:
    """A one-page PDF holding only a picture of ``lines`` (no text layer), as a scanner makes it."""
    out = io.BytesIO()
    text_image(lines).save(out, "PDF", resolution=150)
    return out.getvalue()
