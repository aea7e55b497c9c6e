"""The ``Embedder`` contract, run by every implementation: torch fp32, ONNX Runtime int8, the
fp32 model's search queries on ONNX Runtime fp32 (``int8.FastQueries``, once its file is built),
and ``openai:`` against a real OpenAI-compatible server (Infinity serving the same bundled model,
``infinity`` in conftest), whose vectors must be the local model's.

The int8 model is built once for the session (``int8_models`` in conftest); its build under
concurrency and failure is pinned in ``tests/integration/test_int8_build.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import make_settings
from lorebase.adapters.embedders import build_embedder, embedder_info
from lorebase.adapters.embedders.int8 import FastQueries, OnnxFp32Embedder
from lorebase.adapters.embedders.local import LocalEmbedder
from lorebase.adapters.embedders.protocol import Embedder
from lorebase.errors import PermanentError
from support.openai_proxy import OpenAIProxy

FP32 = "local:all-MiniLM-L6-v2"
INT8 = "local:all-MiniLM-L6-v2-int8"
ONNX_FP32 = "onnx-fp32"  # FP32's queries as the API process embeds them
OPENAI = "openai:all-MiniLM-L6-v2"  # the same weights behind Infinity

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


def openai_embedder(base_url: str, data_dir: Path, **embedding: Any) -> Embedder:
    # Infinity truncates at the model's 256 tokens, as the local runtimes do
    settings = make_settings(data_dir, openai_base_url=base_url, openai_max_tokens=256)
    return build_embedder(
        OPENAI, data_dir=data_dir, settings=settings, embedding={"model": OPENAI, **embedding}
    )


@pytest.fixture(scope="module", params=[FP32, INT8, ONNX_FP32, OPENAI])
def embedder(request: pytest.FixtureRequest, models_dir: Path) -> Iterator[Embedder]:
    if request.param == ONNX_FP32:
        yield onnx_fp32(models_dir)
    elif request.param == OPENAI:
        yield openai_embedder(request.getfixturevalue("infinity"), models_dir)
    else:
        yield build_embedder(request.param, data_dir=models_dir)


def test_vectors_have_the_declared_shape_dtype_and_unit_length(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    dims, _ = embedder_info(embedder.model_id, openai_max_tokens=256)
    assert dims in (384, None)  # an openai: model's: learnt from its endpoint's first answer
    assert (embedder.dimensions, embedder.max_tokens) == (384, 256)
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


def test_openai_vectors_from_infinity_are_the_local_model_s(infinity: str, models_dir: Path) -> None:
    remote = openai_embedder(infinity, models_dir)
    local = build_embedder(FP32, data_dir=models_dir)
    assert remote.model_id == f"{OPENAI}@{infinity}"  # the cache key names the endpoint too
    assert remote.model_id != local.model_id
    cosines = (remote.embed(TEXTS) * local.embed(TEXTS)).sum(axis=1)
    print(f"openai (Infinity) vs local fp32 cosines: min {cosines.min():.6f}, {np.round(cosines, 6)}")
    assert cosines.min() >= 0.999, cosines


def test_openai_endpoints_serving_the_same_name_do_not_share_a_cache_key(
    infinity: str, models_dir: Path
) -> None:
    with OpenAIProxy(infinity) as other:
        a, b = openai_embedder(infinity, models_dir), openai_embedder(other, models_dir)
        assert a.model_id != b.model_id and OPENAI in a.model_id and OPENAI in b.model_id


def test_openai_dimension_is_learnt_then_a_change_is_refused(infinity: str, models_dir: Path) -> None:
    proxy = OpenAIProxy(infinity)
    with proxy as base_url:
        proxy_embedder = openai_embedder(base_url, models_dir)
        assert proxy_embedder.dimensions == 384  # a probe: the first answer sets it
        proxy.truncate(256)  # another model behind the same name
        with pytest.raises(PermanentError, match="now answers 256-dimensional vectors"):
            proxy_embedder.embed(["hello"])
        # a KB's recorded dimension is held from the first call of a fresh process too
        recorded = openai_embedder(base_url, models_dir, dimensions=384)
        with pytest.raises(PermanentError, match=r"256-dimensional .* have 384"):
            recorded.embed(["hello"])


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
