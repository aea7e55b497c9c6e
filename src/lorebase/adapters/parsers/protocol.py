"""The contract every document parser meets, so the pipeline can treat formats alike.

A parser turns raw bytes into a :class:`~lorebase.adapters.parsers.document.ParsedDocument`: an optional
title and structural blocks in reading order. Parsers are stateless and thread-safe, so one
instance per format is shared by the whole process (see ``registry.py``).

Failure contract (the job runner fails the document instead of retrying, so the message is
what a person reads in the UI):

* corrupt or unreadable input raises :class:`~lorebase.errors.PermanentError` with a readable
  message naming the format, e.g. ``"could not read PDF: <reason>"``;
* a readable document without any extractable text (a scanned PDF, an empty file) raises
  ``PermanentError("no extractable text ...")``.

Parsers never raise anything else for bad input: a library exception leaking out would be
treated as a bug rather than as a bad document.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lorebase.adapters.parsers.document import ParsedDocument


@runtime_checkable
class Parser(Protocol):
    """Bytes of one format in, a :class:`ParsedDocument` out."""

    #: the canonical media types this parser accepts (first is the preferred one)
    media_types: tuple[str, ...]

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        """Parse ``data``; ``filename`` only improves error messages and titles, never dispatch."""
        ...
