"""The ``Embedder`` contract, run by every implementation: torch fp32, ONNX Runtime int8, and the
fp32 model's search queries on ONNX Runtime fp32 (``int8.FastQueries``, once its file is built).

The int8 model is built once for the session (``int8_models`` in conftest); its build under
concurrency and failure is pinned in ``tests/integration/test_int8_build.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lorebase.adapters.embedders import build_embedder, embedder_info
from lorebase.adapters.embedders.int8 import FastQueries, OnnxFp32Embedder
from lorebase.adapters.embedders.local import LocalEmbedder
from lorebase.adapters.embedders.protocol import Embedder

FP32 = "local:all-MiniLM-L6-v2"
INT8 = "local:all-MiniLM-L6-v2-int8"
ONNX_FP32 = "onnx-fp32"  # FP32's queries as the API process embeds them

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


def onnx_fp32(models_dir: Path) -> FastQueries:
    fast = build_embedder(FP32, data_dir=models_dir, slot="query", onnx_fp32=True)
    assert isinstance(fast, FastQueries)
    assert fast.wait_ready(120), "the fp32 ONNX model was not built"
    return fast


@pytest.fixture(scope="module", params=[FP32, INT8, ONNX_FP32])
def embedder(request: pytest.FixtureRequest, models_dir: Path) -> Iterator[Embedder]:
    if request.param == ONNX_FP32:
        yield onnx_fp32(models_dir)
    else:
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


def test_fp32_queries_on_onnx_runtime_are_torch_s_vectors(models_dir: Path) -> None:
    torch = build_embedder(FP32, data_dir=models_dir)
    fast = onnx_fp32(models_dir)
    assert fast.model_id == torch.model_id  # the same model on another runtime
    assert fast.tokenizer().to_str() == torch.tokenizer().to_str()
    cosines = (fast.embed(TEXTS) * torch.embed(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.9999, cosines


def test_fp32_queries_are_answered_by_torch_until_the_onnx_file_is_built_or_if_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    release = threading.Event()
    built: list[bool] = []
    fail = {"now": False}

    def held_build(self: OnnxFp32Embedder) -> None:
        assert release.wait(30)
        if fail["now"]:
            raise OSError(28, "No space left on device")
        built.append(True)

    monkeypatch.setattr(OnnxFp32Embedder, "warm_up", held_build)
    monkeypatch.setattr(
        OnnxFp32Embedder, "embed", lambda self, texts: np.full((len(texts), 384), 0.05, np.float32)
    )
    torch = build_embedder(FP32, data_dir=tmp_path)
    fast = build_embedder(FP32, data_dir=tmp_path, slot="query", onnx_fp32=True)
    assert isinstance(fast, FastQueries)
    first = fast.embed(["a query"])  # the build waits: torch answers at once
    assert np.allclose(first, torch.embed(["a query"]), atol=1e-5)
    release.set()
    assert fast.wait_ready(10) and built == [True]
    assert np.allclose(fast.embed(["a query"]), 0.05)  # now the ONNX session answers

    fail["now"] = True  # a build that fails: torch goes on answering
    broken = FastQueries(
        build_embedder(FP32, data_dir=tmp_path / "other"),
        OnnxFp32Embedder(
            "all-MiniLM-L6-v2", data_dir=tmp_path / "other", dimensions=384, max_tokens=256, slot="query"
        ),
    )
    assert not broken.wait_ready(0.5)
    assert np.allclose(broken.embed(["a query"]), torch.embed(["a query"]), atol=1e-5)


def test_only_the_api_process_embeds_queries_on_onnx_runtime(tmp_path: Path) -> None:
    from conftest import make_settings
    from lorebase.runtime import Runtime

    for serving, on, expected in (
        (True, True, FastQueries),
        (False, True, LocalEmbedder),
        (True, False, LocalEmbedder),
    ):
        rt = Runtime(make_settings(tmp_path / f"{serving}-{on}", onnx_queries=on), serving=serving)
        try:
            assert type(rt.query_embedder()) is expected
            assert type(rt.embedder()) is LocalEmbedder  # ingestion stays on torch
        finally:
            rt.close()
