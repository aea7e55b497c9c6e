"""Blob storage contract: bytes in, a key out; content-addressed so identical uploads share storage.

Keys are generated (a SHA-256 hex digest) and never derived from a client's filename, so a
hostile filename can never choose where bytes land.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes; return their key (idempotent: the same bytes give the same key). A ``put``
        of bytes already stored refreshes their ``stored_at`` (the blob GC's grace runs from it)."""
        ...

    def put_file(self, path: Path) -> str:
        """Store a file's bytes (hashed while copied, never whole in memory where the store allows);
        return their key, the same as ``put`` of those bytes would."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes for a key; raise ``NotFound`` if missing."""
        ...

    def delete(self, key: str) -> None:
        """Remove a blob; a missing key is not an error."""
        ...

    def iter_blobs(self) -> Iterator[tuple[str, datetime, int]]:
        """Every stored blob as (key, stored_at in UTC, size in bytes), in no particular order:
        what the blob GC lists. ``stored_at`` is the last ``put`` of those bytes."""
        ...


@runtime_checkable
class StaleDelete(Protocol):
    """What a store may offer the blob GC beyond ``delete`` (the local and database stores do): a
    delete that loses to a concurrent re-``put``, so a blob being stored again is never lost."""

    def delete_unless_stored_since(self, key: str, since: datetime) -> bool:
        """Delete the blob unless it was stored (or re-``put``) at ``since`` or later; True when
        it was deleted."""
        ...
