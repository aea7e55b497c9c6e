"""DOCX, HTML and Markdown tables know their header row, so a cut table repeats it."""

from __future__ import annotations

import io

from docx import Document

from lorebase.adapters.embedders.local import load_tokenizer
from lorebase.adapters.parsers.docx import DocxParser
from lorebase.adapters.parsers.html import HtmlParser
from lorebase.adapters.parsers.markdown import MarkdownParser
from lorebase.pipeline.chunk import chunk
from lorebase.pipeline.types import ChunkingConfig

ROWS = [[f"harbour {n}", f"berth {n}", f"{n * 3} m"] for n in range(60)]
INTRO = "<p>" + "The port authority lists every berth with its depth at low water. " * 4 + "</p>"


def _docx() -> bytes:
    doc = Document()
    doc.add_paragraph("Berths of the port.")
    table = doc.add_table(rows=1 + len(ROWS), cols=3)
    for r, row in enumerate([["Harbour", "Berth", "Depth"], *ROWS]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def _html() -> bytes:
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in ROWS)
    table = f"<table><tr><th>Harbour</th><th>Berth</th><th>Depth</th></tr>{body}</table>"
    return f"<html><body><article><h1>Berths</h1>{INTRO}{table}{INTRO}</article></body></html>".encode()


def _markdown() -> bytes:
    lines = ["# Berths", "", "| Harbour | Berth | Depth |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in ROWS]
    return "\n".join(lines).encode()


def test_tables_of_docx_html_and_markdown_have_one_header_row_repeated_in_every_part() -> None:
    tok = load_tokenizer("all-MiniLM-L6-v2")
    docs = {
        "docx": DocxParser().parse(_docx()),
        "html": HtmlParser().parse(_html()),
        "markdown": MarkdownParser().parse(_markdown()),
    }
    for name, doc in docs.items():
        tables = [b for b in doc.blocks if b.kind == "table"]
        assert [b.header_rows for b in tables] == [1], name
        parts = [
            c
            for c in chunk(doc, ChunkingConfig(chunk_size=100, chunk_overlap=0), tok, max_tokens=256)
            if "|" in c.text  # the table's last rows may share a chunk with the text after it
        ]
        assert len(parts) >= 2, name
        rows: list[str] = []
        for part in parts:
            lines = [ln for ln in part.text.splitlines() if "|" in ln]
            assert lines[0] == "Harbour | Berth | Depth", (name, lines[:2])
            rows += lines[1:]
        assert rows == [" | ".join(r) for r in ROWS], name
