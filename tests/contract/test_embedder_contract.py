"""The ``Embedder`` contract, run by every implementation: torch fp32 and ONNX Runtime int8.

The int8 model is built once for the session (``int8_models`` in conftest); its build under
concurrency and failure is pinned in ``tests/integration/test_int8_build.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lorebase.adapters.embedders import build_embedder, embedder_info
from lorebase.adapters.embedders.protocol import Embedder

FP32 = "local:all-MiniLM-L6-v2"
INT8 = "local:all-MiniLM-L6-v2-int8"

TEXTS = [
    "The cat sat on the mat.",
    "A kitten rested on the rug.",
    "Quarterly revenue grew by twelve percent on strong cloud sales.",
    "x",
    "Mitochondria are the powerhouse of the cell. " * 80,  # far over 256 tokens: truncated, not refused
    "Ünïcödé and emoji 🚀 survive tokenization.",
]


@pytest.fixture(scope="session")
def models_dir(int8_models: Path) -> Path:
    return int8_models


@pytest.fixture(scope="module", params=[FP32, INT8])
def embedder(request: pytest.FixtureRequest, models_dir: Path) -> Iterator[Embedder]:
    yield build_embedder(request.param, data_dir=models_dir)


def test_vectors_have_the_declared_shape_dtype_and_unit_length(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    dims, max_tokens = embedder_info(embedder.model_id)
    assert (embedder.dimensions, embedder.max_tokens) == (dims, max_tokens) == (384, 256)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert embedder.embed([]).shape == (0, 384)


def test_order_and_batching_do_not_change_a_vector(embedder: Embedder) -> None:
    together = embedder.embed(TEXTS)
    alone = np.stack([embedder.embed([t])[0] for t in TEXTS])
    reversed_ = embedder.embed(TEXTS[::-1])[::-1]
    # vectors come back in the texts' order whatever order the batches ran in; int8 quantizes
    # activations per batch, so a text's vector may move a little with its batch-mates
    floor = 0.97 if embedder.model_id.endswith("-int8") else 0.9999  # int8: as far as from fp32
    for other in (alone, reversed_):
        cosines = (together * other).sum(axis=1)
        assert cosines.min() > floor, cosines


def test_meaning_decides_similarity(embedder: Embedder) -> None:
    cat, kitten, revenue = embedder.embed(TEXTS[:3])
    assert float(cat @ kitten) > float(cat @ revenue) + 0.2


def test_tokens_are_counted_by_the_models_own_tokenizer(embedder: Embedder) -> None:
    tok = embedder.tokenizer()
    assert len(tok.encode("The cat sat on the mat.", add_special_tokens=False).ids) == 7
    long = tok.encode(TEXTS[4], add_special_tokens=False)
    assert len(long.ids) > embedder.max_tokens  # counting never truncates; only the model does


def test_int8_is_a_model_of_its_own_close_to_fp32(models_dir: Path) -> None:
    fp32 = build_embedder(FP32, data_dir=models_dir)
    int8 = build_embedder(INT8, data_dir=models_dir)
    assert int8.model_id != fp32.model_id  # the embedding cache and stored vectors never mix them
    assert int8.tokenizer().to_str() == fp32.tokenizer().to_str()
    cosines = (int8.embed(TEXTS) * fp32.embed(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.97, cosines
