"""Blobs as files under ``<data_dir>/blobs/ab/abcdef…`` (content-addressed, atomic writes)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from lorebase.errors import NotFound

_KEY = re.compile(r"^[0-9a-f]{64}$")
_BLOCK = 1024 * 1024


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):  # keys are ours; anything else is tampering
            raise NotFound("blob not found")
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if path.exists():
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def put_file(self, path: Path) -> str:
        """Copy ``path`` in by 1 MiB blocks, hashing on the way; the copy is renamed into place."""
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                while block := src.read(_BLOCK):
                    digest.update(block)
                    out.write(block)
            key = digest.hexdigest()
            target = self._path(key)
            if target.exists():
                Path(tmp).unlink()
                return key
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound("blob not found") from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
