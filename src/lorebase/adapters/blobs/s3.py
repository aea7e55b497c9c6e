"""Blobs as objects of an S3-compatible bucket (``blob_store = "s3"``): AWS S3, MinIO, Ceph, R2.

Object key = ``s3.prefix`` + the sha256 hex of the bytes, as the other stores. ``put_file``
hashes the (spooled, local) file first, then hands it to boto3's managed transfer, which sends a
large file in parts from disk (never whole in memory) and aborts the multipart upload when a
part fails: an object appears under its key only once the upload completed, and the database
names a key only after ``put`` returned.

Failures carry meaning for the job engine: the endpoint unreachable, timeouts, 5xx and
throttling raise ``TransientError`` (the job is retried with backoff), a missing object
``NotFound``. boto3 itself retries little (``s3.max_attempts``), so the engine owns the retry.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lorebase.adapters.blobs.protocol import KEY, attachment
from lorebase.errors import NotFound, PermanentError, TransientError
from lorebase.settings import S3Settings

T = TypeVar("T")
_BLOCK = 1024 * 1024
_MB = 1024 * 1024
#: error codes S3 and its look-alikes answer when trying again later can help
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "OperationAborted",
    "ExpiredToken",  # rotated role credentials: the next attempt signs with fresh ones
    "RequestExpired",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
#: one boto3 session per process: it caches the parsed service models, so a second client
#: (another runtime in this process) costs milliseconds instead of reloading them; sessions are
#: not thread-safe, clients are: clients are made under the lock
_session: boto3.session.Session | None = None
_session_lock = threading.Lock()


def _translated(exc: BaseException) -> Exception:
    """The lorebase error of a boto3/botocore failure."""
    if isinstance(exc, S3UploadFailedError):  # boto3 wraps the ClientError of a failed transfer
        inner = exc.__cause__ or exc.__context__
        return _translated(inner) if inner is not None else TransientError(f"S3 upload failed: {exc}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _MISSING_CODES:
            return NotFound("blob not found")
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429) or status == 0:
            return TransientError(f"S3 is unavailable: {code or status} {error.get('Message', '')}".strip())
        # a refused request (AccessDenied, NoSuchBucket, …): the configuration, not the moment
        return PermanentError(f"S3 refused the request: {code or status} {error.get('Message', '')}".strip())
    # BotoCoreError: EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
    # ConnectionClosedError, ResponseStreamingError… and OSError from the socket itself
    return TransientError(f"S3 could not be reached: {type(exc).__name__}: {exc}")


def _calling(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (BotoCoreError, ClientError, S3UploadFailedError, OSError) as exc:
        raise _translated(exc) from exc


class S3BlobStore:
    def __init__(self, settings: S3Settings) -> None:
        if not settings.bucket:
            raise ValueError("blob_store = s3 needs a bucket: set LOREBASE_S3__BUCKET")
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        secret = settings.secret_access_key
        global _session
        with _session_lock:
            _session = _session or boto3.session.Session()
            self.client: Any = _session.client(
                "s3",
                endpoint_url=settings.endpoint_url,
                region_name=settings.region,
                aws_access_key_id=settings.access_key_id,
                aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
                config=Config(
                    connect_timeout=settings.connect_timeout_seconds,
                    read_timeout=settings.read_timeout_seconds,
                    retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
                    signature_version="s3v4",
                    s3={"addressing_style": "path"} if settings.endpoint_url else {},
                ),
            )
        self.transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold_mb * _MB,
            multipart_chunksize=settings.multipart_chunk_mb * _MB,
            max_concurrency=4,
        )

    def _object(self, key: str) -> str:
        if not KEY.match(key):  # keys are ours; anything else is tampering
            raise NotFound("blob not found")
        return self.prefix + key

    def put(self, data: bytes) -> str:
        """One PUT, also for bytes already stored: the object is rewritten, so its LastModified
        (the stored-at time) moves to now."""
        key = hashlib.sha256(data).hexdigest()
        name = self._object(key)
        _calling(lambda: self.client.put_object(Bucket=self.bucket, Key=name, Body=data))
        return key

    def put_file(self, path: Path) -> str:
        digest = hashlib.sha256()
        with path.open("rb") as src:
            while block := src.read(_BLOCK):
                digest.update(block)
        key = digest.hexdigest()
        name = self._object(key)
        if self._exists(name):
            try:
                self._touch(name)
                return key
            except NotFound:  # deleted in between (blob GC): upload it again
                pass
        _calling(lambda: self.client.upload_file(str(path), self.bucket, name, Config=self.transfer))
        return key

    def _exists(self, name: str) -> bool:
        try:
            _calling(lambda: self.client.head_object(Bucket=self.bucket, Key=name))
        except NotFound:
            return False
        return True

    def _touch(self, name: str) -> None:
        """Copy the object onto itself (server-side, no bytes through us): LastModified moves."""
        _calling(
            lambda: self.client.copy_object(
                Bucket=self.bucket,
                Key=name,
                CopySource={"Bucket": self.bucket, "Key": name},
                MetadataDirective="REPLACE",
                Metadata={"stored-at": datetime.now(UTC).isoformat()},
            )
        )

    def get(self, key: str) -> bytes:
        name = self._object(key)

        def read() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return _calling(read)

    def delete(self, key: str) -> None:
        if KEY.match(key):  # S3 answers a delete of a missing object with success
            _calling(lambda: self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key))

    def iter_blobs(self) -> Iterator[tuple[str, datetime, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        it = iter(pages)
        while True:
            page = _calling(lambda: next(it, None))
            if page is None:
                return
            for obj in page.get("Contents", ()):
                key = obj["Key"][len(self.prefix) :]
                if KEY.match(key):
                    yield key, obj["LastModified"].astimezone(UTC), int(obj["Size"])

    def presigned_url(self, key: str, *, ttl_seconds: int, filename: str, media_type: str) -> str | None:
        """A presigned GET (computed locally, no request) that makes the bucket answer with
        the download headers: ``attachment`` with the sanitized name, and the document's type."""
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._object(key),
                "ResponseContentDisposition": attachment(filename),
                "ResponseContentType": media_type,
            },
            ExpiresIn=ttl_seconds,
        )
        return url
