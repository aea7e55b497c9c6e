"""Blob storage contract: bytes in, a key out; content-addressed so identical uploads share storage.

Keys are generated (a SHA-256 hex digest) and never derived from a client's filename, so a
hostile filename can never choose where bytes land. Every store runs the same contract suite
(``tests/contract/test_blob_contract.py``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote

#: the only keys a store accepts; anything else is tampering and answers ``NotFound``
KEY = re.compile(r"^[0-9a-f]{64}$")


@runtime_checkable
class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes; return their key (idempotent: the same bytes give the same key).

        A put of bytes already stored refreshes their stored-at time (``iter_blobs``): blob GC
        deletes unreferenced blobs older than a grace period, and a re-put made just before a
        reference to the key is committed must not be collected."""
        ...

    def put_file(self, path: Path) -> str:
        """Store a file's bytes (hashed while copied, never whole in memory where the store allows);
        return their key, the same as ``put`` of those bytes would, refreshing the stored-at time
        as ``put`` does. The key exists in the store once this returns, and never before: an
        interrupted upload leaves nothing under the key."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes for a key; raise ``NotFound`` if missing (or the key is malformed),
        ``TransientError`` when the store cannot be reached (the job engine retries)."""
        ...

    def delete(self, key: str) -> None:
        """Remove a blob; a missing key is not an error."""
        ...

    def iter_blobs(self) -> Iterator[tuple[str, datetime, int]]:
        """Every stored blob as ``(key, stored_at, size)``; ``stored_at`` is an aware UTC
        datetime, moved forward by each re-put. Blobs being written (temporary files, unfinished
        uploads) are not listed."""
        ...

    def presigned_url(self, key: str, *, ttl_seconds: int, filename: str, media_type: str) -> str | None:
        """A URL that serves the blob as a download (``filename``, ``media_type``) to anyone
        holding it, for ``ttl_seconds``; None when the store has no such URLs of its own (the
        API then serves the bytes behind a link it signs itself)."""
        ...


def safe_filename(filename: str | None, fallback: str = "original") -> str:
    """A filename fit for a ``Content-Disposition`` header: no path, no control characters, no
    quotes or separators a header parser could trip on; ``fallback`` when nothing is left."""
    name = unicodedata.normalize("NFC", (filename or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in '"<>:;|?*')
    name = name.strip(" .")[:200]
    return name or fallback


def attachment(filename: str | None) -> str:
    """``Content-Disposition`` of a download: an ASCII fallback name and the exact UTF-8 one
    (RFC 6266 / 5987), so the browser saves the file and never renders it inline."""
    name = safe_filename(filename)
    ascii_name = name.encode("ascii", "ignore").decode() or "original"
    ascii_name = ascii_name.replace("%", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


@runtime_checkable
class StaleDelete(Protocol):
    """What a store may offer the blob GC beyond ``delete`` (the local and database stores do): a
    delete that loses to a concurrent re-``put``, so a blob being stored again is never lost."""

    def delete_unless_stored_since(self, key: str, since: datetime) -> bool:
        """Delete the blob unless it was stored (or re-``put``) at ``since`` or later; True when
        it was deleted."""
        ...
