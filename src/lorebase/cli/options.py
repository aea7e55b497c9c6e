"""Command options turned into API values, for the local and the remote CLI alike."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import typer


def settings_patch(assignments: list[str]) -> dict[str, Any]:
    """``["chunking.chunk_size=120", "embedding.model=local:x"]`` → a nested config patch."""
    patch: dict[str, Any] = {}
    for item in assignments:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            raise typer.BadParameter(f"{item!r}: use KEY=VALUE, e.g. chunking.chunk_size=120")
        value: Any = raw
        with contextlib.suppress(ValueError):
            value = json.loads(raw)  # numbers and booleans as such; anything else stays text
        node = patch
        *parents, leaf = path.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return patch


def ingest_options(
    strategy: str | None, chunk_size: int | None, max_pages: int | None, max_depth: int | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``lorebase ingest``'s (config of a new KB, crawl options)."""
    chunking: dict[str, Any] = {}
    if strategy:
        chunking["strategy"] = strategy
    if chunk_size:
        chunking["chunk_size"] = chunk_size
    crawl = {k: v for k, v in (("max_pages", max_pages), ("max_depth", max_depth)) if v is not None}
    return ({"chunking": chunking} if chunking else None), (crawl or None)
