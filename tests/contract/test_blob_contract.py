"""The blob store contract (``lorebase.adapters.blobs.protocol.BlobStore``), run by every store:
``local`` on a temp dir, ``database`` on the test database (SQLite, or PostgreSQL with
``LOREBASE_TEST_DATABASE=postgres``), ``s3`` on the session's moto server (a real HTTP server,
``support.moto_s3``) under a key prefix of the test's own.

Blob GC is built on ``iter_blobs`` and on a re-put refreshing a blob's stored-at time: both are
part of the contract, not of one store.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import make_settings
from lorebase.adapters.blobs.database import DatabaseBlobStore
from lorebase.adapters.blobs.local import LocalBlobStore
from lorebase.adapters.blobs.protocol import BlobStore
from lorebase.adapters.blobs.s3 import S3BlobStore
from lorebase.db.engine import Database
from lorebase.db.migrate import upgrade
from lorebase.errors import NotFound
from lorebase.settings import S3Settings
from support.moto_s3 import s3_settings, shared_server

MB = 1024 * 1024


@pytest.fixture(params=["local", "database", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    elif request.param == "database":
        db = Database(make_settings(tmp_path / "data").resolved_database_url)
        upgrade(db.engine)
        yield DatabaseBlobStore(db)
        db.dispose()
    else:
        url, bucket = shared_server()
        settings = S3Settings(
            **s3_settings(url, bucket, f"contract-{uuid.uuid4().hex[:8]}/"),
            multipart_threshold_mb=5,
            multipart_chunk_mb=5,
        )
        yield S3BlobStore(settings)


def test_it_is_a_blob_store(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)


def test_put_then_get_round_trips_and_the_key_is_the_sha256(store: BlobStore) -> None:
    data = b"\x00hello\xffworld" * 100
    key = store.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    assert store.get(key) == data


def test_the_same_bytes_give_the_same_key_and_one_blob(store: BlobStore) -> None:
    assert store.put(b"same") == store.put(b"same")
    assert [k for k, _, _ in store.iter_blobs()] == [hashlib.sha256(b"same").hexdigest()]


def test_put_file_gives_the_key_put_gives(store: BlobStore, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"file bytes " * 1000)
    key = store.put_file(path)
    assert key == store.put(path.read_bytes())
    assert store.get(key) == path.read_bytes()


@pytest.mark.parametrize("key", ["0" * 64, "../../etc/passwd", "A" * 64, "", "ab/" + "0" * 61])
def test_a_missing_or_malformed_key_is_not_found(store: BlobStore, key: str) -> None:
    with pytest.raises(NotFound):
        store.get(key)


def test_delete_removes_and_is_idempotent(store: BlobStore) -> None:
    key = store.put(b"to delete")
    store.delete(key)
    with pytest.raises(NotFound):
        store.get(key)
    store.delete(key)  # again: no error
    store.delete("0" * 64)  # never stored
    store.delete("../../etc/passwd")  # malformed: nothing to delete
    assert list(store.iter_blobs()) == []


def test_iter_blobs_lists_every_blob_with_its_size_and_an_aware_utc_time(store: BlobStore) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    stored = {store.put(b"a" * n): n for n in (1, 10, 1000)}
    listed = {key: (at, size) for key, at, size in store.iter_blobs()}
    assert {k: size for k, (_, size) in listed.items()} == stored
    for at, _ in listed.values():
        assert at.tzinfo is not None and at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert before.timestamp() - 1 <= at.timestamp() <= time.time() + 1


@pytest.mark.parametrize("via", ["put", "put_file"])
def test_a_re_put_refreshes_the_stored_at_time(store: BlobStore, tmp_path: Path, via: str) -> None:
    """Blob GC keeps what was stored within its grace period: a re-put right before a reference
    is committed must count as fresh (S3 keeps LastModified to the second: hence the wait)."""
    data = b"refreshed " * 100
    path = tmp_path / "again.bin"
    path.write_bytes(data)
    key = store.put(data)
    (first,) = [at for k, at, _ in store.iter_blobs() if k == key]
    time.sleep(1.1)
    assert (store.put(data) if via == "put" else store.put_file(path)) == key
    (second,) = [at for k, at, _ in store.iter_blobs() if k == key]
    assert second > first
    assert store.get(key) == data


def test_a_large_file_round_trips(store: BlobStore, tmp_path: Path) -> None:
    """20 MB: on S3 a multipart upload of four 5 MB parts (the threshold is lowered here)."""
    path = tmp_path / "large.bin"
    with path.open("wb") as f:
        for _ in range(20):
            f.write(os.urandom(MB))
    key = store.put_file(path)
    assert key == hashlib.sha256(path.read_bytes()).hexdigest()
    assert store.get(key) == path.read_bytes()
    assert [size for k, _, size in store.iter_blobs() if k == key] == [20 * MB]


def test_presigned_urls_are_the_object_stores_own(store: BlobStore) -> None:
    key = store.put(b"x")
    url = store.presigned_url(key, ttl_seconds=60, filename="a.txt", media_type="text/plain")
    assert (url is not None) == isinstance(store, S3BlobStore)
