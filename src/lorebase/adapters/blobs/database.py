"""Blobs as rows of the ``blobs`` table: every API node and worker that reaches the database
reads them, so uploads need no shared disk (``blob_store = "database"``, the default on PostgreSQL).

Content-addressed like the local store: the key is the sha256 of the bytes, a second ``put`` of
the same bytes writes only ``created_at`` (the blob's ``stored_at``: the blob GC's grace runs from
it). Each call runs in a short transaction of its own, so a blob is
saved before the draft or job row that names it is committed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select, update

from lorebase.adapters.blobs.protocol import KEY
from lorebase.db.engine import Database, insert_or_skip
from lorebase.db.models import Blob, utcnow
from lorebase.errors import NotFound

_LIST_BATCH = 1000


class DatabaseBlobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        now = utcnow()
        with self.db.session() as s:
            # refresh first: bytes already here are not sent again, only their stored_at moves
            if s.execute(update(Blob).where(Blob.key == key).values(created_at=now)).rowcount == 0:  # type: ignore[attr-defined]
                s.execute(
                    insert_or_skip(
                        s,
                        Blob,
                        {"key": key, "data": data, "size": len(data), "created_at": now},
                        index_elements=["key"],
                    )
                )
        return key

    def put_file(self, path: Path) -> str:
        """A row holds the whole value: the file is read into memory (uploads are capped per file
        by ``max_upload_bytes``, and read one at a time)."""
        return self.put(path.read_bytes())

    def get(self, key: str) -> bytes:
        if not KEY.match(key):  # keys are ours; anything else is tampering
            raise NotFound("blob not found")
        with self.db.read_session() as s:
            data = s.execute(select(Blob.data).where(Blob.key == key)).scalar()
        if data is None:
            raise NotFound("blob not found")
        return bytes(data)

    def delete(self, key: str) -> None:
        if KEY.match(key):
            with self.db.session() as s:
                s.execute(delete(Blob).where(Blob.key == key))

    def iter_blobs(self) -> Iterator[tuple[str, datetime, int]]:
        """By key, in batches of short read transactions (no transaction held while the caller
        works through the listing)."""
        after = ""
        while True:
            with self.db.read_session() as s:
                rows = s.execute(
                    select(Blob.key, Blob.created_at, Blob.size)
                    .where(Blob.key > after)
                    .order_by(Blob.key)
                    .limit(_LIST_BATCH)
                ).all()
            yield from ((key, created_at, size) for key, created_at, size in rows)
            if len(rows) < _LIST_BATCH:
                return
            after = rows[-1][0]

    def presigned_url(self, key: str, *, ttl_seconds: int, filename: str, media_type: str) -> str | None:
        return None

    def delete_unless_stored_since(self, key: str, since: datetime) -> bool:
        """Delete the blob unless it was stored (or re-``put``) at ``since`` or later, in one
        statement; True when deleted. A ``put`` that comes after it inserts the bytes again."""
        with self.db.session() as s:
            gone = s.execute(delete(Blob).where(Blob.key == key, Blob.created_at < since))
        return bool(gone.rowcount)  # type: ignore[attr-defined]
