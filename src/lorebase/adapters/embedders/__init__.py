"""Embedders: the ``Embedder`` protocol (``protocol.py``) and its implementations, by spec
(``local:<model>``)."""

from __future__ import annotations

from lorebase.adapters.embedders.local import LOCAL_MODELS
from lorebase.errors import InvalidInput


def embedder_info(spec: str) -> tuple[int, int]:
    """(dimensions, max_tokens) of an embedder spec without loading it; InvalidInput if unknown."""
    kind, _, name = spec.partition(":")
    if kind == "local" and name in LOCAL_MODELS:
        return LOCAL_MODELS[name]
    raise InvalidInput(
        f"unknown embedding model {spec!r}; available: {', '.join('local:' + m for m in LOCAL_MODELS)}"
    )
