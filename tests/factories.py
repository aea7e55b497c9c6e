"""Small factories for real files of every supported format (made on the fly, nothing mocked)."""

from __future__ import annotations

import io

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
