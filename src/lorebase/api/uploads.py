"""Endpoints that take either JSON or multipart files (field ``files``, repeatable).

Uploads are streamed, never buffered whole: the multipart body is parsed as it arrives (the
streaming parser of python-multipart) and each file part is written to a spool file under
``<data_dir>/tmp/uploads`` (generated names; the client's filename is metadata only) while its
bytes are counted. Limits, each answered with 413 ``payload_too_large`` at once, without reading on:

* a file over ``settings.max_upload_bytes`` (the moment its part passes the limit);
* a request over ``REQUEST_FILE_CAPS`` times ``max_upload_bytes`` plus ``REQUEST_SLACK_BYTES`` (for
  headers and small fields): by ``Content-Length`` before the body is read, else while streaming;
* more than ``MAX_FILES_PER_REQUEST`` files, or a text field over ``MAX_FIELD_BYTES``.

A request may name each file's ``external_id`` (the repeatable text field ``external_id``, one per
file, in the order of the files): a file sent again with the same external id replaces its
earlier version in the KB, as a text record's does (``lorebase ingest`` sends each file's path
relative to the folder given).

The spool files are deleted when the request ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
from fastapi import Request
from pydantic import BaseModel, ValidationError
from python_multipart.multipart import MultipartParser, parse_options_header

from lorebase.api.schemas.requests import unstorable
from lorebase.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from lorebase.pipeline.documents import sanitize_filename
from lorebase.services.documents import FileTuple
from lorebase.settings import Settings

#: files one multipart request may carry (a folder's worth; more go in several requests)
MAX_FILES_PER_REQUEST = 1000
#: the files of one request may total this many times ``max_upload_bytes`` (bounds the spool)
REQUEST_FILE_CAPS = 10
#: room for multipart headers and small text fields on top of the files themselves
REQUEST_SLACK_BYTES = 1024 * 1024
#: a non-file form field (text) larger than this is refused
MAX_FIELD_BYTES = 64 * 1024
FIELD = "files"
EXTERNAL_ID_FIELD = "external_id"
MAX_EXTERNAL_ID_CHARS = 500


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def request_cap(settings: Settings) -> int:
    """The largest request body accepted by an upload (or JSON) endpoint."""
    return settings.max_upload_bytes * REQUEST_FILE_CAPS + REQUEST_SLACK_BYTES


def spool_dir(settings: Settings) -> Path:
    return settings.data_dir / "tmp" / "uploads"


def check_content_length(request: Request, cap: int) -> None:
    """413 before reading anything when the declared body is over ``cap``."""
    raw = request.headers.get("content-length")
    if raw is None:
        return
    try:
        declared = int(raw)
    except ValueError:
        raise InvalidInput("the Content-Length header is not a number") from None
    if declared > cap:
        raise PayloadTooLarge(
            f"the request body is {declared} bytes: over the {cap} byte limit per request "
            f"(files of one request may total {REQUEST_FILE_CAPS} times the per-file limit; "
            "send them in several requests)",
            details={"limit_bytes": cap},
        )


@dataclass
class SpooledUpload:
    filename: str | None
    content_type: str | None
    path: Path
    size: int = 0


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None
    file: IO[bytes] | None = None
    upload: SpooledUpload | None = None
    size: int = 0
    keep: bool = False
    value: bytearray = field(default_factory=bytearray)


class _Collector:
    """python-multipart callbacks: file parts of ``files`` to spool files, the rest counted."""

    def __init__(self, boundary: bytes, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.uploads: list[SpooledUpload] = []
        self.external_ids: list[str] = []
        self.part = _Part()
        self._field = bytearray()
        self._value = bytearray()
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def _begin(self) -> None:
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.part.headers[bytes(self._field).decode("latin-1").lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        part = self.part
        disposition, options = parse_options_header(part.headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise InvalidInput("a multipart part has no Content-Disposition: form-data name")
        part.name = _decode(options[b"name"])
        if b"filename" in options:
            part.filename = _decode(options[b"filename"])
        if part.name == EXTERNAL_ID_FIELD and part.filename is None:
            part.keep = True
            return
        if part.name != FIELD:
            return  # another field: counted, not kept
        if part.filename is None:
            raise InvalidInput(f"the form field {FIELD!r} must carry files")
        if len(self.uploads) >= MAX_FILES_PER_REQUEST:
            raise PayloadTooLarge(
                f"more than {MAX_FILES_PER_REQUEST} files in one request: send them in several",
                details={"limit_files": MAX_FILES_PER_REQUEST},
            )
        ctype = part.headers.get("content-type")
        fd, path = tempfile.mkstemp(dir=self.directory, prefix="upload-")
        part.file = os.fdopen(fd, "wb")
        part.upload = SpooledUpload(part.filename, _decode(ctype) if ctype else None, Path(path))
        self.uploads.append(part.upload)

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.size += end - start
        if part.file is not None:
            if part.size > self.max_bytes:
                name = sanitize_filename(part.filename)
                raise PayloadTooLarge(
                    f"{name!r} is over the {self.max_bytes} byte upload limit per file",
                    details={"filename": name, "limit_bytes": self.max_bytes},
                )
            part.file.write(data[start:end])
        elif part.filename is None and part.size > MAX_FIELD_BYTES:
            raise PayloadTooLarge(f"the form field {part.name!r} is over {MAX_FIELD_BYTES} bytes")
        elif part.keep:
            part.value += data[start:end]

    def _end(self) -> None:
        part = self.part
        if part.keep:
            self.external_ids.append(_external_id(bytes(part.value)))
        if part.file is not None and part.upload is not None:
            part.file.close()
            part.file = None
            part.upload.size = part.size

    def close(self) -> None:
        if self.part.file is not None:
            self.part.file.close()
            self.part.file = None


def _external_id(raw: bytes) -> str:
    value = _decode(raw)
    if len(value) > MAX_EXTERNAL_ID_CHARS:
        raise InvalidInput(f"an external_id is over {MAX_EXTERNAL_ID_CHARS} characters")
    if (problem := unstorable(value)) is not None:
        raise InvalidInput(f"external_id: {problem}")
    return value


@dataclass
class Received:
    """The files of a multipart request (spooled) and their external ids (None: not named)."""

    files: list[FileTuple]
    external_ids: list[str | None] | None = None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@contextlib.asynccontextmanager
async def receive_files(request: Request, settings: Settings) -> AsyncIterator[Received]:
    """Stream the multipart body's ``files`` to spool files; yields (filename, declared content
    type, spool file path) per file with their external ids, and deletes the spool files on exit."""
    cap = request_cap(settings)
    check_content_length(request, cap)
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("the multipart body has no boundary in its Content-Type")
    directory = spool_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    collector = _Collector(boundary, directory, settings.max_upload_bytes)
    try:
        received = 0
        async for chunk in body_chunks(request):
            received += len(chunk)
            if received > cap:
                raise PayloadTooLarge(
                    f"the request body is over the {cap} byte limit per request", details={"limit_bytes": cap}
                )
            # in a worker thread: writing to the spool files must not hold up the event loop
            await anyio.to_thread.run_sync(collector.parser.write, chunk)
        collector.parser.finalize()
        collector.close()
        if not collector.uploads:
            raise InvalidInput(f"no files found: send them in the repeatable multipart field {FIELD!r}")
        ids = collector.external_ids
        if ids and len(ids) != len(collector.uploads):
            raise InvalidInput(
                f"{len(ids)} external_id fields for {len(collector.uploads)} files: send one per file, "
                "in the order of the files"
            )
        yield Received(
            [(u.filename, u.content_type, u.path) for u in collector.uploads],
            [x or None for x in ids] if ids else None,
        )
    finally:
        collector.close()
        for upload in collector.uploads:
            upload.path.unlink(missing_ok=True)


def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (from the idempotency spool if that read it already)."""
    spooled = request.scope.get(SPOOLED_BODY)
    if isinstance(spooled, Path):
        return _file_chunks(spooled)
    return request.stream()


SPOOLED_BODY = "lorebase.spooled_body"


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await anyio.to_thread.run_sync(f.read, 1024 * 1024):
            yield chunk


async def read_body(request: Request, cap: int) -> bytes:
    """A (JSON) body, refused with 413 once it passes ``cap`` bytes."""
    check_content_length(request, cap)
    body = bytearray()
    async for chunk in body_chunks(request):
        body += chunk
        if len(body) > cap:
            raise PayloadTooLarge(
                f"the request body is over the {cap} byte limit per request", details={"limit_bytes": cap}
            )
    return bytes(body)


async def read_json(request: Request, *models: type[BaseModel], cap: int | None = None) -> BaseModel:
    """Validate a JSON body against the first model whose ``type`` (if any) matches."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype and "json" not in ctype:
        raise UnsupportedMediaType("send application/json or multipart/form-data")
    try:
        body = await read_body(request, cap) if cap is not None else await request.body()
        raw: Any = json.loads(body or b"null")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise InvalidInput("the body is not valid JSON") from None
    if not isinstance(raw, dict):
        raise InvalidInput("the body must be a JSON object")
    errors: list[Any] = []
    for model in models:
        type_field = model.model_fields.get("type")
        if type_field is not None and raw.get("type") not in _literal_values(type_field.annotation):
            continue
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            errors.extend(
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
            )
    if not errors:
        allowed = [v for m in models for v in _literal_values(m.model_fields["type"].annotation)]
        raise InvalidInput(f"unknown source type {raw.get('type')!r}; expected one of {allowed}")
    raise InvalidInput("the request is not valid", details=errors)


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    return tuple(getattr(annotation, "__args__", ()))
