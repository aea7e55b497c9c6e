"""Endpoints that take either JSON or multipart files (field ``files``, repeatable)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from lorebase.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

FileTuple = tuple[str | None, str | None, bytes]


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_files(request: Request, max_bytes: int) -> list[FileTuple]:
    form = await request.form()
    files: list[FileTuple] = []
    try:
        for value in form.getlist("files"):
            if not isinstance(value, UploadFile):
                raise InvalidInput("the form field 'files' must carry files")
            if value.size is not None and value.size > max_bytes:
                raise PayloadTooLarge(f"{value.filename!r} exceeds the {max_bytes} byte upload limit")
            files.append((value.filename, value.content_type, await value.read()))
    finally:
        await form.close()
    if not files:
        raise InvalidInput("no files found: send them in the repeatable multipart field 'files'")
    return files


async def read_json(request: Request, *models: type[BaseModel]) -> BaseModel:
    """Validate a JSON body against the first model whose ``type`` (if any) matches."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype and "json" not in ctype:
        raise UnsupportedMediaType("send application/json or multipart/form-data")
    try:
        raw: Any = json.loads(await request.body() or b"null")
    except ValueError:
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
