"""Blobs as files under ``<data_dir>/blobs/ab/abcdef…`` (content-addressed, atomic writes).

A blob's ``stored_at`` is its file's mtime: a ``put`` of bytes already here touches the file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from lorebase.adapters.blobs.protocol import KEY
from lorebase.errors import NotFound

_BLOCK = 1024 * 1024


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not KEY.match(key):  # keys are ours; anything else is tampering
            raise NotFound("blob not found")
        return self.root / key[:2] / key

    @staticmethod
    def _refreshed(path: Path) -> bool:
        """Touch an existing blob (its mtime is its stored-at time); False when there is none."""
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        return True

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if self._refreshed(path):
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
            if self._refreshed(target):
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
        if KEY.match(key):
            self._path(key).unlink(missing_ok=True)

    def iter_blobs(self) -> Iterator[tuple[str, datetime, int]]:
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if not KEY.match(entry.name):  # ``.tmp-*``: a write in progress
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # deleted meanwhile
                    continue
                yield entry.name, datetime.fromtimestamp(st.st_mtime, UTC), st.st_size

    def presigned_url(self, key: str, *, ttl_seconds: int, filename: str, media_type: str) -> str | None:
        return None

    def delete_unless_stored_since(self, key: str, since: datetime) -> bool:
        """Delete the blob unless it was stored (or re-``put``) at ``since`` or later; True when
        deleted. Safe against a concurrent ``put``: the file is first renamed aside (a ``put``
        from then on finds nothing and writes the bytes afresh), then its mtime is read; a file
        refreshed before the rename is put back."""
        path = self._path(key)
        aside = path.with_name(f".gc-{key}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return False
        if datetime.fromtimestamp(aside.stat().st_mtime, tz=UTC) >= since:
            with contextlib.suppress(FileExistsError):  # a put already wrote it again
                os.link(aside, path)
            aside.unlink()
            return False
        aside.unlink()
        return True
