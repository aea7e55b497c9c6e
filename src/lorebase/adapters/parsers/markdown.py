"""Markdown (CommonMark + GFM tables) into structural blocks.

markdown-it-py gives a real syntax tree, so structure comes from the grammar rather than from
guessing at ``#`` and ``-`` with regular expressions (which breaks on code blocks holding
``# comments``). Inline markup is flattened to plain text because embeddings and snippets want
words, not asterisks; soft line breaks become spaces since source wrapping carries no meaning.

:func:`markdown_to_blocks` is shared with the HTML parser's fallback and tests.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError

from .text import decode_text

_md = MarkdownIt("commonmark").enable("table")

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.M)
_TAG = re.compile(r"<!--.*?-->|<[^>]+>", re.S)
_SPACES = re.compile(r"[ \t]+")


def _inline_text(node: SyntaxTreeNode) -> str:
    """Plain text of an inline subtree: markup dropped, code and image alt text kept."""
    parts: list[str] = []

    def walk(n: SyntaxTreeNode) -> None:
        if n.type in ("text", "code_inline"):
            parts.append(n.content)
        elif n.type == "softbreak":
            parts.append(" ")
        elif n.type == "hardbreak":
            parts.append("\n")
        elif n.type == "html_inline":
            return
        for child in n.children:
            walk(child)

    walk(node)
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _strip_html(raw: str) -> str:
    return _SPACES.sub(" ", html.unescape(_TAG.sub(" ", raw))).strip()


def _table_rows(node: SyntaxTreeNode) -> list[str]:
    rows: list[str] = []
    for section in node.children:  # thead / tbody
        for tr in section.children:
            cells = [_inline_text(cell).replace("\n", " ") for cell in tr.children]
            if any(cells):
                rows.append(" | ".join(cells))
    return rows


def _code_text(node: SyntaxTreeNode) -> str:
    return node.content.rstrip("\n").strip("\n")


def _list_lines(node: SyntaxTreeNode, depth: int) -> list[str]:
    """Lines of a (possibly nested) list: ``- x`` / ``1. x``, two spaces per nesting level."""
    ordered = node.type == "ordered_list"
    number = int(node.attrs.get("start", 1) or 1) if ordered else 0
    indent = "  " * depth
    lines: list[str] = []
    for item in node.children:
        marker = f"{number}. " if ordered else "- "
        number += 1
        first = True
        for child in item.children:
            if child.type in ("bullet_list", "ordered_list"):
                lines.extend(_list_lines(child, depth + 1))
                continue
            text = _node_plain_text(child)
            if not text:
                continue
            for line in text.split("\n"):
                prefix = indent + marker if first else indent + " " * len(marker)
                lines.append(prefix + line if line else "")
                first = False
        if first:  # an empty item still shows its marker
            lines.append(indent + marker.rstrip())
    return lines


def _node_plain_text(node: SyntaxTreeNode) -> str:
    """Text of a block nested in a list item, flattened (tables and code keep their lines)."""
    if node.type in ("paragraph", "heading"):
        return _inline_text(node.children[0]) if node.children else ""
    if node.type in ("fence", "code_block"):
        return _code_text(node)
    if node.type == "table":
        return "\n".join(_table_rows(node))
    if node.type == "html_block":
        return _strip_html(node.content)
    if node.type in ("bullet_list", "ordered_list"):
        return "\n".join(_list_lines(node, 0))
    return "\n".join(t for t in (_node_plain_text(c) for c in node.children) if t)


def _blocks_from(node: SyntaxTreeNode, out: list[Block]) -> None:
    for child in node.children:
        kind = child.type
        if kind == "heading":
            text = _inline_text(child.children[0]).replace("\n", " ") if child.children else ""
            if text:
                out.append(Block(kind="heading", text=text, level=int(child.tag[1:])))
        elif kind == "paragraph":
            text = _inline_text(child.children[0]) if child.children else ""
            if text:
                out.append(Block(kind="paragraph", text=text))
        elif kind in ("bullet_list", "ordered_list"):
            lines = _list_lines(child, 0)
            if lines:
                out.append(Block(kind="list", text="\n".join(lines)))
        elif kind == "table":
            rows = _table_rows(child)
            if rows:
                out.append(Block(kind="table", text="\n".join(rows), header_rows=1 if len(rows) > 1 else 0))
        elif kind in ("fence", "code_block"):
            code = _code_text(child)
            if code.strip():
                out.append(Block(kind="code", text=code))
        elif kind == "html_block":
            text = _strip_html(child.content)
            if text:
                out.append(Block(kind="paragraph", text=text))
        elif kind == "blockquote":
            _blocks_from(child, out)
        # hr and anything unknown carry no text


def _split_front_matter(text: str) -> tuple[str, str | None]:
    """Remove YAML front matter (else CommonMark reads it as a setext heading); return its title."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return text, None
    title_match = _FRONT_TITLE.search(match.group(1))
    title = title_match.group(1).strip("'\"") if title_match else None
    return text[match.end() :], title or None


def markdown_to_blocks(text: str) -> list[Block]:
    """Parse Markdown source into blocks in reading order (front matter is skipped)."""
    body, _ = _split_front_matter(text)
    out: list[Block] = []
    _blocks_from(SyntaxTreeNode(_md.parse(body)), out)
    return out


class MarkdownParser:
    """``text/markdown``: title is the first level-1 heading, else a front-matter ``title:``."""

    media_types: tuple[str, ...] = ("text/markdown",)

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        text = decode_text(data)
        _, front_title = _split_front_matter(text)
        blocks = markdown_to_blocks(text)
        if not blocks:
            raise PermanentError("no extractable text: the Markdown file has no content")
        title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), front_title)
        return ParsedDocument(title=title, blocks=blocks)
