"""HTML pages: main content only, with headings, lists, tables and code kept as blocks.

Why trafilatura, and why not always: trafilatura's boilerplate detection is far better than
any tag list at finding the article on arbitrary sites (div soup with no ``<main>``), and its
XML output keeps structure faithfully on real pages (checked on mdbook and rustdoc pages:
headings, ``<pre>`` code with line breaks, tables, nested lists). XML rather than Markdown
output because Markdown is ambiguous on the way back (a literal ``*`` or ``1.`` in text). But
it loses heading ids, and it has two failure modes that the page's own DOM does better:

* on short pages it switches to a "baseline" extraction that flattens structure (``<pre>``
  turns into one line, nav links leak into paragraphs) or returns nothing;
* on pages with an author-declared ``<main>`` / ``[role=main]`` / single ``<article>`` it
  sometimes drops large parts of it (rustdoc's method docs).

So the DOM walk of the main element (navigation, sidebars, footers, scripts and forms removed)
is taken as is when the author declared one (``<main>``, ``[role=main]``, a single
``<article>``: every documentation generator does) or when the page is small; it is also about
ten times faster than trafilatura, which matters to a crawler (the Python docs: 530 pages parse
in ~4 s instead of ~36 s). Otherwise trafilatura runs, and the DOM walk still wins when
trafilatura found nothing. Heading anchors in the trafilatura
result are recovered by matching heading text against the page's headings.
"""

from __future__ import annotations

import logging
from typing import Any

import trafilatura
from lxml import etree

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError

from .html_dom import (
    clean_heading,
    collapse,
    decode_html,
    dom_blocks,
    flat,
    has_words,
    heading_anchors,
    heading_key,
    inline_text,
    main_container,
    page_title,
    parse_dom,
    strip_boilerplate,
)

log = logging.getLogger(__name__)

#: below this many characters of main text a page is "small": the DOM walk is used
SMALL_PAGE_CHARS = 1500

_BLOCK_TAGS = {"head", "p", "list", "table", "code", "quote", "div", "main"}


def _xml_list_lines(el: Any, depth: int) -> list[str]:
    ordered = el.get("rend") == "ol"
    lines: list[str] = []
    number = 1
    for item in el.iterchildren("item"):
        rend = item.get("rend") or ""
        own = inline_text(item, skip=("list",))
        if rend.startswith("dt"):
            marker, first_indent = "- ", ""
        elif rend.startswith("dd"):
            marker, first_indent = "", "  "
        else:
            marker, first_indent = (f"{number}. " if ordered else "- "), ""
            number += 1
        for i, line in enumerate(own.split("\n") if own else []):
            lead = marker if i == 0 else " " * len(marker)
            lines.append("  " * depth + first_indent + lead + line)
        for nested in item.iter("list"):
            if next(nested.iterancestors("list"), None) is el:  # direct sub-list, not a deeper one
                lines.extend(_xml_list_lines(nested, depth + 1))
    return lines


def _xml_table_rows(table: Any) -> list[str]:
    rows: list[str] = []
    for row in table.iterchildren("row"):
        cells = [inline_text(cell).replace("\n", " ") for cell in row.iterchildren("cell")]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


class _XmlWalker:
    """trafilatura's XML (head/p/list/table/code/quote) into blocks, in document order."""

    def __init__(self, anchors: dict[str, list[str | None]]) -> None:
        self.anchors = anchors
        self.blocks: list[Block] = []
        self.buf: list[str] = []

    def flush(self) -> None:
        text = collapse("".join(self.buf))
        self.buf.clear()
        if has_words(text):
            self.blocks.append(Block(kind="paragraph", text=text))

    def add(self, block: Block) -> None:
        self.flush()
        if block.text.strip() if block.kind == "code" else has_words(block.text):
            self.blocks.append(block)

    def walk_children(self, el: Any) -> None:
        self.buf.append(flat(el.text))
        for child in el:
            self.walk(child)
            self.buf.append(flat(child.tail))

    def walk(self, el: Any) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        rend = el.get("rend") or ""
        if tag == "head" and rend[:1] == "h" and rend[1:].isdigit():
            text = clean_heading(inline_text(el))
            queue = self.anchors.get(heading_key(text))
            anchor = queue.pop(0) if queue else None
            self.add(Block(kind="heading", text=text, level=min(max(int(rend[1:]), 1), 6), anchor=anchor))
        elif tag in ("p", "head"):
            self.add(Block(kind="paragraph", text=inline_text(el)))
        elif tag == "list":
            self.add(Block(kind="list", text="\n".join(_xml_list_lines(el, 0))))
        elif tag == "table":
            rows = _xml_table_rows(el)
            first = next(el.iterchildren("row"), None)
            head = first is not None and any(c.get("role") == "head" for c in first.iterchildren("cell"))
            self.add(
                Block(kind="table", text="\n".join(rows), header_rows=1 if head and len(rows) > 1 else 0)
            )
        elif tag == "code":
            self.add(Block(kind="code", text="".join(el.itertext()).strip("\n").rstrip()))
        elif tag in ("quote", "div", "main") and any(c.tag in _BLOCK_TAGS for c in el):
            self.flush()
            self.walk_children(el)
            self.flush()
        elif tag in ("quote", "div"):
            self.add(Block(kind="paragraph", text=inline_text(el)))
        elif tag == "lb":
            self.buf.append("\n")
        elif tag:  # inline markup (hi, ref, graphic ...) between blocks
            self.buf.append(inline_text(el) if len(el) else flat(el.text))


def _trafilatura_blocks(text: str, anchors: dict[str, list[str | None]]) -> list[Block]:
    try:
        xml = trafilatura.extract(
            text,
            output_format="xml",
            include_tables=True,
            include_formatting=True,
            include_links=False,
            include_images=False,
            include_comments=False,
            favor_recall=True,
            deduplicate=False,
            with_metadata=False,
        )
    except Exception:  # a heuristic library: any failure means "use the DOM walk"
        log.warning("trafilatura failed on a page; using the DOM walk", exc_info=True)
        return []
    if not xml:
        return []
    try:
        root = etree.fromstring(xml.encode("utf-8"))
    except etree.XMLSyntaxError:
        return []
    main = root.find("main")
    if main is None:
        return []
    walker = _XmlWalker({k: list(v) for k, v in anchors.items()})
    walker.walk_children(main)
    walker.flush()
    return walker.blocks


def _text_len(blocks: list[Block]) -> int:
    return sum(len(b.text) for b in blocks)


class HtmlParser:
    """``text/html``: trafilatura for the main content, the page's DOM as the fallback."""

    media_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        text = decode_html(data)
        try:
            root = parse_dom(text)
        except (etree.ParserError, ValueError) as exc:
            if not text.strip():
                raise PermanentError("no extractable text: the HTML page is empty") from exc
            raise PermanentError(f"could not read HTML: {exc}") from exc
        title = page_title(root)
        anchors = heading_anchors(root)

        container, explicit = main_container(root)
        strip_boilerplate(container, explicit)
        fallback = dom_blocks(container)
        dom_len = _text_len(fallback)
        if fallback and (explicit or dom_len < SMALL_PAGE_CHARS):
            # an author-declared main element is taken as is (faster, keeps every heading id);
            # trafilatura would only flatten a small page (see the module docstring)
            blocks = fallback
        else:
            extracted = _trafilatura_blocks(text, anchors)
            blocks = fallback if fallback and not extracted else extracted
        if not blocks:
            raise PermanentError("no extractable text: the HTML page has no main content")
        if title is None:
            title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
        return ParsedDocument(
            title=title, blocks=blocks, metadata={"extractor": "dom" if blocks is fallback else "trafilatura"}
        )
