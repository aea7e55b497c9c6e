"""The s3 blob store's failure paths on a real S3-compatible server (moto_server), reached
through a TCP gate the tests cut: an outage is transient (the job engine retries), a missing
object ``NotFound``, an interrupted multipart upload leaves no object, and presigned links
download with the headers asked for and expire."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from lorebase.adapters.blobs.s3 import S3BlobStore
from lorebase.errors import NotFound, PermanentError, TransientError
from lorebase.settings import S3Settings, Settings
from support.moto_s3 import TcpGate, s3_settings, shared_server

MB = 1024 * 1024


@pytest.fixture
def gate() -> Iterator[TcpGate]:
    url, _ = shared_server()
    g = TcpGate(int(url.rsplit(":", 1)[1]))
    yield g
    g.close()


def _store(endpoint: str, **extra: object) -> S3BlobStore:
    _, bucket = shared_server()
    fields = {**s3_settings(endpoint, bucket, f"s3t-{uuid.uuid4().hex[:8]}/"), **extra}
    return S3BlobStore(S3Settings(**fields))  # type: ignore[arg-type]


def test_an_unreachable_endpoint_is_a_transient_error(gate: TcpGate, tmp_path: Path) -> None:
    store = _store(gate.url, connect_timeout_seconds=1, read_timeout_seconds=2)
    key = store.put(b"kept")
    gate.cut()
    path = tmp_path / "f"
    path.write_bytes(b"new")
    started = time.monotonic()
    for call in (lambda: store.get(key), lambda: store.put(b"other"), lambda: store.put_file(path)):
        with pytest.raises(TransientError):
            call()
    with pytest.raises(TransientError):
        list(store.iter_blobs())
    assert time.monotonic() - started < 10  # boto3 retries little: the job engine owns the retry
    gate.restore()
    assert store.get(key) == b"kept"


def test_a_refused_endpoint_is_a_transient_error() -> None:
    from support.cluster import free_port

    store = _store(f"http://127.0.0.1:{free_port()}", connect_timeout_seconds=1)
    with pytest.raises(TransientError, match="could not be reached"):
        store.get("0" * 64)


def test_an_interrupted_multipart_upload_leaves_no_object(gate: TcpGate, tmp_path: Path) -> None:
    store = _store(gate.url, multipart_threshold_mb=5, multipart_chunk_mb=5, read_timeout_seconds=5)
    path = tmp_path / "large.bin"
    path.write_bytes(os.urandom(20 * MB))
    gate.cut_after(12 * MB)  # in the middle of the third part
    with pytest.raises(TransientError):
        store.put_file(path)
    gate.restore()
    assert list(store.iter_blobs()) == []
    key = store.put_file(path)  # the job's retry
    assert store.get(key) == path.read_bytes()


def test_a_multipart_upload_cut_in_the_middle_is_aborted(gate: TcpGate, tmp_path: Path) -> None:
    """The connections drop once mid-upload and the endpoint stays reachable: boto3's transfer
    aborts the multipart upload, so neither an object nor an unfinished upload is left."""
    store = _store(gate.url, multipart_threshold_mb=5, multipart_chunk_mb=5, max_attempts=1)
    path = tmp_path / "large.bin"
    path.write_bytes(os.urandom(20 * MB))
    gate.cut_after(12 * MB, reopen=True)
    with pytest.raises(TransientError):
        store.put_file(path)
    assert list(store.iter_blobs()) == []
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert uploads.get("Uploads", []) == []


def test_a_missing_bucket_is_refused_by_the_server() -> None:
    url, _ = shared_server()
    store = _store(url, bucket=f"nope-{uuid.uuid4().hex[:8]}")
    with pytest.raises(PermanentError, match="NoSuchBucket"):
        store.put(b"x")
    with pytest.raises((NotFound, PermanentError)):
        store.get("0" * 64)


def test_blob_store_s3_without_a_bucket_is_a_clear_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="LOREBASE_S3__BUCKET"):
        Settings(data_dir=tmp_path, blob_store="s3", _env_file=None)  # type: ignore[call-arg]


def test_a_presigned_url_downloads_as_an_attachment_and_carries_its_lifetime() -> None:
    """moto does not enforce a presigned URL's expiry (AWS, MinIO and Ceph do): the lifetime
    is checked as the signed ``X-Amz-Expires``, the headers as the server answers them."""
    url, _ = shared_server()
    store = _store(url)
    key = store.put(b"<html><script>alert(1)</script></html>")
    link = store.presigned_url(key, ttl_seconds=90, filename='../a "b".html', media_type="text/html")
    assert link is not None
    r = httpx.get(link)
    assert r.status_code == 200 and r.content.startswith(b"<html>")
    assert r.headers["content-disposition"].startswith("attachment;")
    assert "a b.html" in r.headers["content-disposition"] and ".." not in r.headers["content-disposition"]
    assert r.headers["content-type"].startswith("text/html")
    assert "X-Amz-Expires=90&" in link
