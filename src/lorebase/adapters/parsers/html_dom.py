"""Helpers for the HTML parser that work on the page's own DOM (lxml), not trafilatura's output.

They do three jobs: decode the bytes the way a browser would, read the title and the heading
anchors (trafilatura drops ids), and turn a main-content element into blocks when trafilatura
cannot be trusted (see ``html.py`` for when that is).
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from lorebase.adapters.parsers.document import Block

from .text import decode_text

HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_DROP_TAGS = {
    "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed",
    "button", "input", "select", "textarea", "option", "nav", "aside", "footer", "dialog",
    "head", "title", "meta", "link", "map", "audio", "video",
}  # fmt: skip
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "dialog"}
_BOILERPLATE = re.compile(
    r"(?:^|[\s_-])(?:nav|navbar|navigation|menu|sidebar|footer|breadcrumbs?|cookies?|skip-link|toc|share|social)"
    r"(?:$|[\s_-])",
    re.I,
)
_BOILERPLATE_TAGS = {"div", "section", "ul", "ol", "span", "header", "aside", "nav", "details"}
_CONTAINER_TAGS = {
    "html", "body", "main", "article", "section", "div", "header", "blockquote", "figure", "figcaption",
    "details", "summary", "center", "address", "fieldset", "form", "hgroup", "li", "dd", "dt", "td", "th",
}  # fmt: skip
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_HEADING_MARKS = "¶#§🔗 \t\n"


def decode_html(data: bytes) -> str:
    """Bytes to text: BOM, then ``<meta charset>``, then the plain-text heuristics.

    lxml given bytes without a charset declaration assumes Latin-1, which garbles most of the
    modern (UTF-8) web, so decoding is done here and lxml only ever sees ``str``.
    """
    if not data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        match = _CHARSET.search(data[:4096])
        if match:
            try:
                text = data.decode(match.group(1).decode("ascii"))
                return _XML_DECL.sub("", text)
            except (LookupError, UnicodeDecodeError):
                pass
    return _XML_DECL.sub("", decode_text(data))


def collapse(text: str) -> str:
    """Whitespace runs to one space per line; empty lines dropped (``\\n`` marks a real <br>)."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def flat(text: str | None) -> str:
    """Source text with its line breaks as spaces: in HTML only ``<br>`` breaks a line."""
    return (text or "").replace("\r", " ").replace("\n", " ")


def has_words(text: str) -> bool:
    """False for leftovers such as "§", "¶" or "·" that carry nothing to search for."""
    return any(ch.isalnum() for ch in text)


def clean_heading(text: str) -> str:
    """Heading text without permalink marks ("Install¶", "§Examples") and line breaks."""
    return collapse(text).replace("\n", " ").strip(_HEADING_MARKS)


def heading_key(text: str) -> str:
    return clean_heading(text).casefold()


def page_title(root: Any) -> str | None:
    """``<title>``, else ``og:title``, else the first ``<h1>`` (each looked up only if needed)."""
    candidates = (
        lambda: root.findtext(".//title"),
        lambda: next(iter(root.xpath("//meta[@property='og:title']/@content")), None),
        lambda: next((clean_heading(inline_text(h)) for h in root.iter("h1")), None),
    )
    for candidate in candidates:
        text = collapse(str(candidate() or ""))
        if text:
            return text.replace("\n", " ")
    return None


def heading_anchor(h: Any) -> str | None:
    """The id a link to this heading would use: its own, a child/preceding ``<a>``, or its section's."""
    if h.get("id"):
        return str(h.get("id"))
    for a in h.iter("a"):
        if a.get("id") or a.get("name"):
            return str(a.get("id") or a.get("name"))
    prev = h.getprevious()
    if (
        prev is not None
        and prev.tag == "a"
        and not "".join(prev.itertext()).strip()
        and (prev.get("id") or prev.get("name"))
    ):
        return str(prev.get("id") or prev.get("name"))
    parent = h.getparent()
    if parent is not None and parent.get("id") and parent.tag in ("section", "div", "article"):
        # <section id="install"><a>Source</a><h2>Install</h2>: the section's first heading
        first = next((c for c in parent if isinstance(c.tag, str) and c.tag in HEADING_TAGS), None)
        if first is h:
            return str(parent.get("id"))
    return None


def heading_anchors(root: Any) -> dict[str, list[str | None]]:
    """Heading text key -> anchors in page order (a queue, so repeated titles map one to one)."""
    out: dict[str, list[str | None]] = {}
    for h in root.iter(*HEADING_TAGS):
        out.setdefault(heading_key(inline_text(h)), []).append(heading_anchor(h))
    return out


def main_container(root: Any) -> tuple[Any, bool]:
    """The author-declared main content element if any (``explicit``), else ``<body>``:
    the first ``<main>``, else the first ``role=main``, else the only ``<article>``."""
    found = root.xpath("//main | //*[@role='main'] | //article")  # one pass, in document order
    for candidate in (
        next((el for el in found if el.tag == "main"), None),
        next((el for el in found if el.get("role") == "main"), None),
    ):
        if candidate is not None:
            return candidate, True
    articles = [el for el in found if el.tag == "article"]
    if len(articles) == 1:
        return articles[0], True
    body = root.find(".//body")
    return (body if body is not None else root), False


def _is_boilerplate(el: Any, explicit: bool) -> bool:
    tag = el.tag
    if tag in _DROP_TAGS:
        return True
    if tag == "header" and not explicit and not el.xpath("ancestor::article|ancestor::main"):
        return True
    if not el.attrib:  # most elements: nothing more to look at
        return False
    if (el.get("role") or "").lower() in _DROP_ROLES:
        return True
    if el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    if tag in _BOILERPLATE_TAGS:
        return bool(_BOILERPLATE.search(el.get("class") or "") or _BOILERPLATE.search(el.get("id") or ""))
    return False


def strip_boilerplate(container: Any, explicit: bool) -> None:
    """Remove navigation, scripts, forms and the like in place (keeping their tail text)."""
    doomed = [el for el in container.iter() if isinstance(el.tag, str) and _is_boilerplate(el, explicit)]
    for el in doomed:
        if el is not container and el.getparent() is not None:
            drop_tree(el)


def inline_text(el: Any, *, skip: tuple[str, ...] = ()) -> str:
    """Text of an element with ``<br>`` as a line break; subtrees with tags in ``skip`` left out."""
    if next(el.iterdescendants("br", "lb", *skip), None) is None:  # the common case, all in C
        return collapse(flat("".join(el.itertext())))
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node.tag, str):
            if node.tag in ("br", "lb"):  # <lb/> is trafilatura's line break
                parts.append("\n")
            elif node.tag not in skip:
                parts.append(flat(node.text))
                for child in node:
                    walk(child)
        parts.append(flat(node.tail))

    parts.append(flat(el.text))
    for child in el:
        walk(child)
    return collapse("".join(parts))


def _list_lines(el: Any, depth: int) -> list[str]:
    ordered = el.tag == "ol"
    try:
        number = int(el.get("start") or 1)
    except ValueError:
        number = 1
    lines: list[str] = []
    for li in el:
        if not isinstance(li.tag, str):
            continue
        if li.tag in ("dt", "dd"):
            text = inline_text(li).replace("\n", " ")
            if text:
                lines.append(("  " * depth) + ("- " if li.tag == "dt" else "  ") + text)
            continue
        marker = f"{number}. " if ordered else "- "
        number += 1
        own = inline_text(li, skip=("ul", "ol", "dl"))
        for i, line in enumerate(own.split("\n") if own else []):
            lines.append("  " * depth + (marker if i == 0 else " " * len(marker)) + line)
        for nested in li.iter("ul", "ol", "dl"):
            if next(nested.iterancestors("ul", "ol", "dl"), None) is el:  # direct sub-list only
                lines.extend(_list_lines(nested, depth + 1))
    return lines


def table_rows(table: Any) -> list[str]:
    rows: list[str] = []
    for tr in table.xpath("./tr|./thead/tr|./tbody/tr|./tfoot/tr"):
        cells = [inline_text(c).replace("\n", " ") for c in tr if c.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def table_header_rows(table: Any) -> int:
    """1 when the table's first row is a header (in ``<thead>`` or all ``<th>``), else 0."""
    first = next(iter(table.xpath("./tr|./thead/tr|./tbody/tr")), None)
    if first is None:
        return 0
    cells = [c for c in first if c.tag in ("td", "th")]
    in_head = first.getparent() is not None and first.getparent().tag == "thead"
    return 1 if cells and (in_head or all(c.tag == "th" for c in cells)) else 0


class _Walker:
    """Depth-first walk that emits blocks; loose inline text gathers into paragraphs."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.buf: list[str] = []

    def flush(self) -> None:
        text = collapse("".join(self.buf))
        self.buf.clear()
        if has_words(text):
            self.blocks.append(Block(kind="paragraph", text=text))

    def add(self, kind: Any, text: str, **kw: Any) -> None:
        self.flush()
        if text.strip() if kind == "code" else has_words(text):
            self.blocks.append(Block(kind=kind, text=text, **kw))

    def walk(self, el: Any) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in HEADING_TAGS:
            text = clean_heading(inline_text(el))
            self.add("heading", text, level=HEADING_TAGS[tag], anchor=heading_anchor(el))
        elif tag == "p":
            self.add("paragraph", inline_text(el))
        elif tag in ("ul", "ol", "dl"):
            self.add("list", "\n".join(_list_lines(el, 0)))
        elif tag == "table":
            caption = el.find("caption")
            if caption is not None:
                self.add("paragraph", inline_text(caption))
            rows = table_rows(el)
            self.add("table", "\n".join(rows), header_rows=table_header_rows(el) if len(rows) > 1 else 0)
        elif tag == "pre":
            self.add("code", "".join(el.itertext()).strip("\n").rstrip())
        elif tag == "br":
            self.buf.append("\n")
        elif tag == "hr":
            self.flush()
        elif tag:
            block = tag in _CONTAINER_TAGS
            if block:
                self.flush()
            self.buf.append(flat(el.text))
            for child in el:
                self.walk(child)
            if block:
                self.flush()
        self.buf.append(flat(el.tail))


def dom_blocks(container: Any) -> list[Block]:
    """Blocks of an (already boilerplate-stripped) element, in document order."""
    walker = _Walker()
    walker.buf.append(flat(container.text))
    for child in container:
        walker.walk(child)
    walker.flush()
    return walker.blocks


def parse_dom(text: str | bytes) -> Any:
    """lxml document for ``text``; raises ``etree.ParserError`` for an empty document.

    ``lxml.html.document_fromstring`` without its custom element classes: those cost a Python
    lookup for every element touched (~25% of a parse), and nothing here needs their methods.
    """
    root = etree.fromstring(text, etree.HTMLParser())  # a parser per call: they are not thread-safe
    if root is None:
        raise etree.ParserError("Document is empty")
    return root


def drop_tree(el: Any) -> None:
    """Remove ``el`` and its subtree, keeping the text that follows it (``lxml.html``'s drop_tree)."""
    parent = el.getparent()
    if el.tail:
        previous = el.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)
