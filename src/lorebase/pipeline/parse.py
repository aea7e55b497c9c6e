"""Parse stage: bytes plus a detected media type in, a :class:`ParsedDocument` out.

A thin re-export so the pipeline reads as stages (parse -> chunk -> embed -> index) while the
format knowledge stays with the parser adapters; detect the type first with
``lorebase.adapters.parsers.registry.detect_media_type``.
"""

from __future__ import annotations

from lorebase.adapters.parsers.registry import detect_media_type, parse_bytes

parse = parse_bytes

__all__ = ["detect_media_type", "parse", "parse_bytes"]
