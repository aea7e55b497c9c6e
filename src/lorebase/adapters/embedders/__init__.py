"""Embedders: the ``Embedder`` protocol (``protocol.py``) and its implementations, by spec:
``local:all-MiniLM-L6-v2`` (torch fp32, ``local.py``; its searches' queries on ONNX Runtime
fp32, ``int8.FastQueries``) and ``local:all-MiniLM-L6-v2-int8`` (ONNX Runtime int8, built once per
data dir, ``int8.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lorebase.adapters.embedders.local import INT8_PACKAGES_HINT, INT8_SUFFIX, LOCAL_MODELS, LocalEmbedder
from lorebase.adapters.embedders.protocol import Embedder
from lorebase.errors import InvalidInput


def embedder_info(spec: str) -> tuple[int, int]:
    """(dimensions, max_tokens) of an embedder spec without loading it; InvalidInput if unknown."""
    kind, _, name = spec.partition(":")
    if kind == "local" and name in LOCAL_MODELS:
        return LOCAL_MODELS[name]
    raise InvalidInput(
        f"unknown embedding model {spec!r}; available: {', '.join('local:' + m for m in LOCAL_MODELS)}"
    )


def embedder_problem(spec: str) -> str | None:
    """Why this machine cannot run ``spec`` (a known model whose runtime packages are missing),
    or None. Unknown specs are ``embedder_info``'s to refuse."""
    if spec.partition(":")[2].endswith(INT8_SUFFIX):
        missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
        if missing:
            return (
                f"{spec} runs on ONNX Runtime and this installation lacks {', '.join(missing)}: "
                + INT8_PACKAGES_HINT
            )
    return None


def build_embedder(
    spec: str, *, data_dir: Path, slot: str = "ingest", threads: int = 0, onnx_fp32: bool = False
) -> Embedder:
    """The embedder for ``spec``; models load on first use. ``data_dir`` holds built models (int8,
    fp32 ONNX), ``threads`` caps the runtime's intra-op threads (0: its default, one per core).
    ``onnx_fp32``: the fp32 model runs on ONNX Runtime once built, torch meanwhile
    (``int8.FastQueries``: the search slot's runtime)."""
    dimensions, max_tokens = embedder_info(spec)
    name = spec.partition(":")[2]
    if name.endswith(INT8_SUFFIX):
        from lorebase.adapters.embedders.int8 import Int8Embedder

        return Int8Embedder(
            name, data_dir=data_dir, dimensions=dimensions, max_tokens=max_tokens, threads=threads, slot=slot
        )
    torch = LocalEmbedder(name, slot=slot, threads=threads)
    if onnx_fp32 and embedder_problem(spec + INT8_SUFFIX) is None:
        from lorebase.adapters.embedders.int8 import FastQueries, OnnxFp32Embedder

        onnx = OnnxFp32Embedder(
            name, data_dir=data_dir, dimensions=dimensions, max_tokens=max_tokens, threads=threads, slot=slot
        )
        return FastQueries(torch, onnx)
    return torch
