"""PowerPoint (.pptx) presentations with python-pptx: one section per slide.

Each slide opens with a heading (its title placeholder, else "Slide N"), then its text frames
as paragraphs and its tables as table blocks, in reading order (top to bottom, then left to
right: the shapes' XML order is their z-order, which says nothing about reading), and last
its speaker notes as a paragraph starting with "Notes:" — notes often hold what the presenter
says, which is exactly what a question is asked about. Every block's ``page`` is the slide
number, so a chunk cites its slide. Pictures, charts and media carry no text and are skipped;
grouped shapes are walked into.

Like DOCX, the zip is checked for a bomb and its XML parts for DTD/entity declarations
(``zipguard``) before python-pptx opens it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE_TYPE, PP_PLACEHOLDER

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError

from .tables import cell_text
from .zipguard import guard_zip

PPTX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
#: slide headings are level 2: a deck without a title is then titled by its file name, not "Slide 1"
_LEVEL = 2
_TITLE_TYPES = (PP_PLACEHOLDER.TITLE, PP_PLACEHOLDER.CENTER_TITLE, PP_PLACEHOLDER.VERTICAL_TITLE)


def _lines(text: str) -> str:
    return "\n".join(s for s in (" ".join(line.split()) for line in text.splitlines()) if s)


def _shapes(shapes: Any) -> Iterator[Any]:
    """Shapes in reading order, group shapes opened."""
    ordered = sorted(shapes, key=lambda s: ((s.top or 0), (s.left or 0)))
    for shape in ordered:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _is_title(shape: Any) -> bool:
    return bool(shape.is_placeholder and shape.placeholder_format.type in _TITLE_TYPES)


def _slide_blocks(slide: Any, number: int) -> list[Block]:
    title = ""
    body: list[Block] = []
    for shape in _shapes(slide.shapes):
        if shape.has_text_frame:
            text = _lines(shape.text_frame.text)
            if not text:
                continue
            if not title and _is_title(shape):
                title = text.replace("\n", " ")
                continue
            body.append(Block(kind="paragraph", text=text, page=number))
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = []
            for row in shape.table.rows:
                cells = [cell_text(cell.text) for cell in row.cells]
                if any(cells):
                    rows.append(" | ".join(cells))
            if rows:
                body.append(Block(kind="table", text="\n".join(rows), page=number))
    if slide.has_notes_slide:
        notes_frame = slide.notes_slide.notes_text_frame
        notes = _lines(notes_frame.text) if notes_frame is not None else ""
        if notes:
            body.append(Block(kind="paragraph", text=f"Notes: {notes}", page=number))
    heading = Block(kind="heading", text=title or f"Slide {number}", level=_LEVEL, page=number)
    return [heading, *body] if body or title else []


class PptxParser:
    """PowerPoint ``.pptx``: a heading, text, tables and speaker notes per slide."""

    media_types: tuple[str, ...] = (PPTX_MEDIA_TYPE,)

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        guard_zip(data, "PPTX")
        try:
            deck = Presentation(io.BytesIO(data))
            slides = list(deck.slides)
            blocks = [b for n, slide in enumerate(slides, 1) for b in _slide_blocks(slide, n)]
            title = (deck.core_properties.title or "").strip()
        except MemoryError:
            raise
        except zipfile.BadZipFile as exc:
            raise PermanentError(
                "could not read PPTX: the file is not a zip archive (damaged, or not a .pptx)"
            ) from exc
        except Exception as exc:  # KeyError, PackageNotFoundError, XML syntax errors ...
            reason = str(exc).strip("\"' ") or type(exc).__name__
            raise PermanentError(f"could not read PPTX: {reason}") from exc
        if not blocks:
            raise PermanentError("no extractable text: the PPTX presentation has no text")
        first = next(
            (b.text for b in blocks if b.kind == "heading" and not b.text.startswith("Slide ")), None
        )
        return ParsedDocument(title=title or first, blocks=blocks, page_count=len(slides))
