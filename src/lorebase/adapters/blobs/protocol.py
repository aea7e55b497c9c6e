"""Blob storage contract: bytes in, a key out; content-addressed so identical uploads share storage.

Keys are generated (a SHA-256 hex digest) and never derived from a client's filename, so a
hostile filename can never choose where bytes land.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes; return their key (idempotent: the same bytes give the same key)."""
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
