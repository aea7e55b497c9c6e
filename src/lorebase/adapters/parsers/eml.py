"""E-mail messages (.eml, ``message/rfc822``) with the standard library's :mod:`email`.

The subject is the title; From, To, Cc, Subject and Date go into the document's metadata (so a
search can filter on them); the body becomes blocks: ``text/plain`` when the message has it
(split into paragraphs like a text file), else ``text/html`` through the HTML parser.

Attachments are **not parsed**: each is listed in ``metadata["attachments"]`` (filename,
content type, decoded size) and a warning says they were skipped. An attachment is a document
of its own — a PDF, a spreadsheet, another message — and indexing it well means a child
document with its own media type, parser, limits and chunks, linked to this message; folding
its text into the message's body would mix two documents' chunks and apply none of the
per-format checks (a zip bomb inside an attachment would skip ``zipguard`` at upload). Child
documents are a follow-up.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import LorebaseError, PermanentError

from .html import HtmlParser
from .text import decode_text, split_paragraphs

EML_MEDIA_TYPE = "message/rfc822"
_HEADERS = ("from", "to", "cc", "subject", "date")


def _header(msg: EmailMessage, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header the default policy cannot fold: keep the rest
        return None
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def _attachments(msg: EmailMessage) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True)  # None for a forwarded message (message/rfc822)
        size = len(payload) if isinstance(payload, bytes) else len(part.as_bytes())
        found.append({"filename": part.get_filename(), "content_type": part.get_content_type(), "size": size})
    return found


def _body_blocks(msg: EmailMessage) -> list[Block]:
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is None:
        return []
    raw = body.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return []
    charset = body.get_content_charset()
    try:
        text = raw.decode(charset) if charset else decode_text(raw)
    except (LookupError, UnicodeDecodeError):  # an unknown or wrong charset label
        text = decode_text(raw)
    if body.get_content_type() == "text/html":
        try:
            return HtmlParser().parse(text.encode("utf-8")).blocks
        except LorebaseError:
            return []
    return [Block(kind="paragraph", text=p) for p in split_paragraphs(text.replace("\r\n", "\n"))]


class EmlParser:
    """``message/rfc822``: headers as metadata, the body as blocks, attachments listed only."""

    media_types: tuple[str, ...] = (EML_MEDIA_TYPE,)

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        try:
            msg = email.message_from_bytes(data, policy=email.policy.default)
            if not isinstance(msg, EmailMessage):  # pragma: no cover - the default policy makes one
                raise TypeError("not an e-mail message")
            metadata: dict[str, Any] = {k: v for k in _HEADERS if (v := _header(msg, k)) is not None}
            blocks = _body_blocks(msg)
            attachments = _attachments(msg)
        except MemoryError:
            raise
        except Exception as exc:  # the email package raises many kinds on malformed input
            raise PermanentError(f"could not read e-mail: {type(exc).__name__}: {exc}") from exc
        if attachments:
            metadata["attachments"] = attachments
            names = ", ".join(a["filename"] or a["content_type"] for a in attachments)
            metadata["warnings"] = [
                f"{len(attachments)} attachment(s) not indexed ({names}): attachments are not parsed yet"
            ]
        if not blocks:
            raise PermanentError("no extractable text: the e-mail has no text body")
        return ParsedDocument(title=metadata.get("subject"), blocks=blocks, metadata=metadata)
