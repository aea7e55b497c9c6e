"""Embedders: the ``Embedder`` protocol (``protocol.py``) and its implementations, by spec:
``local:all-MiniLM-L6-v2`` (torch fp32, ``local.py``; its searches' queries on ONNX Runtime
fp32, ``int8.FastQueries``) and ``local:all-MiniLM-L6-v2-int8`` (ONNX Runtime int8, built once per
data dir, ``int8.py``); ``openai:<model>``, any OpenAI-compatible embeddings endpoint
(``openai.py``), its requests metered by budgets all workers share (``budget.py``).

An ``openai:`` model's dimension is unknown until its endpoint answers: ``embedder_info``
gives None for it, and a KB records the dimension in its config (``embedding.dimensions``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorebase.adapters.embedders.budget import shared_budget
from lorebase.adapters.embedders.local import INT8_PACKAGES_HINT, INT8_SUFFIX, LOCAL_MODELS, LocalEmbedder
from lorebase.adapters.embedders.openai import APPROXIMATE_TOKENIZER, Endpoint, OpenAIEmbedder, shown_url
from lorebase.adapters.embedders.protocol import Embedder
from lorebase.errors import InvalidInput

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from lorebase.settings import Settings

#: an ``openai:`` model's input limit when the settings do not say (OpenAI's embedding models')
OPENAI_MAX_TOKENS = 8191


def embedder_info(spec: str, *, openai_max_tokens: int = OPENAI_MAX_TOKENS) -> tuple[int | None, int]:
    """(dimensions, max_tokens) of an embedder spec without loading it (dimensions None: an
    ``openai:`` model, known once its endpoint answers); InvalidInput if unknown."""
    kind, _, name = spec.partition(":")
    if kind == "local" and name in LOCAL_MODELS:
        return LOCAL_MODELS[name]
    if kind == "openai" and name.strip():
        return None, openai_max_tokens
    raise InvalidInput(
        f"unknown embedding model {spec!r}; available: "
        f"{', '.join('local:' + m for m in LOCAL_MODELS)}, openai:<model>"
    )


def is_openai(spec: str) -> bool:
    return spec.startswith("openai:")


def tokenizer_ref(spec: str, openai_tokenizer: Path | None) -> str:
    """What names ``spec``'s tokenizer in another process (the parse pool): a local model's spec,
    or for ``openai:`` the ``file:`` of ``openai_tokenizer`` (or the bundled approximation)."""
    if not is_openai(spec):
        return spec
    if openai_tokenizer is not None:
        return f"file:{openai_tokenizer}"
    return f"local:{APPROXIMATE_TOKENIZER}"


def load_tokenizer_ref(ref: str) -> Tokenizer:
    """The tokenizer :func:`tokenizer_ref` named (cached per process)."""
    from lorebase.adapters.embedders.local import load_tokenizer
    from lorebase.adapters.embedders.openai import file_tokenizer

    kind, _, rest = ref.partition(":")
    return file_tokenizer(rest) if kind == "file" else load_tokenizer(rest)


def openai_endpoint(settings: Settings, embedding: Mapping[str, Any]) -> Endpoint:
    """Where a KB's ``openai:`` model is served: its own ``embedding.base_url`` or the server's
    ``openai_base_url``. The API key goes to the server's endpoint only: a KB naming another
    URL (which any KB writer may) must not receive the deployment's key. InvalidInput when
    neither names an endpoint."""
    base_url = embedding.get("base_url") or settings.openai_base_url
    if not base_url:
        raise InvalidInput(
            f"{embedding.get('model')} needs an OpenAI-compatible endpoint: set LOREBASE_OPENAI_BASE_URL "
            "on the server, or config.embedding.base_url on the knowledge base"
        )
    same = settings.openai_base_url is not None and base_url.rstrip("/") == settings.openai_base_url.rstrip(
        "/"
    )
    allowed = {u.strip().rstrip("/") for u in settings.openai_allowed_base_urls.split(",") if u.strip()}
    if not same and base_url.rstrip("/") not in allowed:
        # a KB's own endpoint is an address its writers choose: only those the operator listed
        raise InvalidInput(
            f"config.embedding.base_url {shown_url(base_url)} is not an endpoint this server lets a "
            "knowledge base name: leave it out to use LOREBASE_OPENAI_BASE_URL, or have the operator "
            "add it to LOREBASE_OPENAI_ALLOWED_BASE_URLS"
        )
    return Endpoint(
        base_url=base_url,
        api_key=settings.openai_api_key if same else None,
        timeout=settings.openai_timeout_seconds,
        batch_size=settings.openai_batch_size,
        batch_tokens=settings.openai_batch_tokens,
        budget=shared_budget(
            redis_url=settings.redis_url,
            prefix=settings.queue_prefix,
            rpm=settings.openai_rpm,
            tpm=settings.openai_tpm,
            window_seconds=settings.openai_rate_window_seconds,
        ),
    )


def embedder_problem(spec: str) -> str | None:
    """Why this machine cannot run ``spec`` (a known model whose runtime packages are missing),
    or None. Unknown specs are ``embedder_info``'s to refuse."""
    if not is_openai(spec) and spec.partition(":")[2].endswith(INT8_SUFFIX):
        missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
        if missing:
            return (
                f"{spec} runs on ONNX Runtime and this installation lacks {', '.join(missing)}: "
                + INT8_PACKAGES_HINT
            )
    return None


def build_embedder(
    spec: str,
    *,
    data_dir: Path,
    slot: str = "ingest",
    threads: int = 0,
    onnx_fp32: bool = False,
    settings: Settings | None = None,
    embedding: Mapping[str, Any] | None = None,
) -> Embedder:
    """The embedder for ``spec``; models load on first use. ``data_dir`` holds built models (int8,
    fp32 ONNX), ``threads`` caps the runtime's intra-op threads (0: its default, one per core).
    ``onnx_fp32``: the fp32 model runs on ONNX Runtime once built, torch meanwhile
    (``int8.FastQueries``: the search slot's runtime). An ``openai:`` model needs ``settings``
    and reads its KB's ``embedding`` options (``base_url``, ``dimensions``)."""
    if is_openai(spec):
        if settings is None:
            raise InvalidInput(f"{spec}: an openai: model is built from the settings")
        embedding = embedding or {"model": spec}
        return OpenAIEmbedder(
            spec.partition(":")[2],
            openai_endpoint(settings, embedding),
            dimensions=embedding.get("dimensions"),
            max_tokens=settings.openai_max_tokens,
            tokenizer_path=settings.openai_tokenizer,
            slot=slot,
        )
    dimensions, max_tokens = embedder_info(spec)
    assert dimensions is not None  # a local model
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
