"""``local:all-MiniLM-L6-v2-int8``: the bundled model on ONNX Runtime, dynamically quantized to int8.

Nothing is downloaded. The first use builds the ONNX file from the bundled weights, once per data
dir, and keeps it in ``<data_dir>/models/all-MiniLM-L6-v2-int8/``:

1. export: the transformer with mean pooling and L2 normalisation inside the graph, traced by
   ``torch.onnx.export`` with eager attention (an attention pattern ONNX Runtime's BERT fusion
   recognises; the SDPA export is not fused and runs ~20 % slower);
2. fuse: ``onnxruntime.transformers.optimizer`` (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm);
3. quantize: ``onnxruntime.quantization.quantize_dynamic``, int8 weights per channel with a 7-bit
   range (``reduce_range``: on AVX2 CPUs without VNNI the u8 x s8 products saturate otherwise), on
   MatMul and Attention only;
4. verify: the int8 vectors of a few probe texts must lie within cosine ``MIN_PROBE_COSINE`` of the
   fp32 model's, else the build fails.

Building takes a few seconds (export ~2 s, fusion and quantization ~3 s on this 2-core machine). It
runs under a file lock, so processes that start together build it once; the others wait and load
it. The file is written in a temporary directory beside it and moved into place, then a manifest
with its SHA-256 is written the same way: a file without a manifest that matches, say after a crash
or a full disk, is never trusted and is built again.

int8 vectors are a model of their own (``model_id`` differs), so the embedding cache, the stored
vectors and the KB config never mix them with fp32 ones. Tokens are counted by the same tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lorebase.adapters.embedders.local import (
    INT8_PACKAGES_HINT,
    SlotEmbedder,
    base_model,
    model_dir,
    token_batches,
    truncating_tokenizer,
)
from lorebase.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

#: bump when the build steps change: a cached file built by another recipe is built again
RECIPE = 1
#: the int8 vectors of the probe texts must be at least this close to fp32 (measured: 0.99)
MIN_PROBE_COSINE = 0.97
PROBES = (
    "Knowledge bases turn documents into searchable chunks.",
    "The mitochondrial membrane potential was measured in vitro after treatment with the inhibitor, "
    "and apoptosis rates were compared across three cell lines over 48 hours. " * 4,
    "a",
)
#: texts per ONNX Runtime call: int8 kernels run best on small batches here (8-16 measured)
DEFAULT_BATCH = 16


#: the folder suffix of the fp32 (not quantized) ONNX build of a model: its queries' runtime
FP32_SUFFIX = "-onnx-fp32"
#: the fp32 build's vectors of the probe texts must match torch's this closely (measured: 1.0000)
MIN_FP32_PROBE_COSINE = 0.9999


def cache_dir(data_dir: Path, name: str, *, quantized: bool = True) -> Path:
    return data_dir / "models" / (name if quantized else name + FP32_SUFFIX)


def _manifest_ok(target: Path, manifest: Path) -> bool:
    try:
        meta = json.loads(manifest.read_text())
        if meta.get("recipe") != RECIPE or target.stat().st_size != meta.get("size"):
            return False
        return bool(_sha256(target) == meta.get("sha256"))
    except (OSError, ValueError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: model files this process has checked against their manifest
_TRUSTED: set[Path] = set()


def ensure_model(data_dir: Path, name: str, *, quantized: bool = True) -> tuple[Path, bool]:
    """The int8 ONNX file for ``name`` (built now if needed) and whether this call built it;
    ``quantized=False``: the fused fp32 ONNX file of the same model (its queries' runtime).

    Raises ``PermanentError`` when a package the build needs is missing, and ``TransientError``
    when the build fails for a reason that may pass (disk full, I/O error); nothing half-written
    is left that a later call would trust.
    """
    from filelock import FileLock

    folder = cache_dir(data_dir, name, quantized=quantized)
    target, manifest = folder / "model.onnx", folder / "model.json"
    if target in _TRUSTED or _manifest_ok(target, manifest):
        _TRUSTED.add(target)  # the ingest and query slots of one process hash the file once
        return target, False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".build.lock")):
            if _manifest_ok(target, manifest):  # another process built it while we waited
                return target, False
            started = time.perf_counter()
            kind = "int8" if quantized else "fp32 ONNX"
            log.info("building the %s embedding model %s in %s (once per data dir)", kind, name, folder)
            _build(name, folder, target, manifest, quantized)
            _TRUSTED.add(target)
            log.info("built %s in %.1fs", target, time.perf_counter() - started)
            return target, True
    except ImportError as exc:
        raise PermanentError(
            f"the int8 embedding runtime needs onnxruntime and onnx ({exc}): {INT8_PACKAGES_HINT}"
        ) from exc
    except OSError as exc:
        raise TransientError(
            f"could not build the int8 embedding model in {folder}: {exc.strerror or exc}"
        ) from exc


def _build(name: str, folder: Path, target: Path, manifest: Path, quantized: bool) -> None:
    import onnx  # noqa: F401  (fail early, before the export, when a package is missing)
    import onnxruntime  # noqa: F401

    quiet = _OnnxRuntimeChatter()
    logging.getLogger().addFilter(quiet)  # the quantizer logs every tensor on the root logger
    try:
        _build_in(name, folder, target, manifest, quantized)
    finally:
        logging.getLogger().removeFilter(quiet)


class _OnnxRuntimeChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR


def _build_in(name: str, folder: Path, target: Path, manifest: Path, quantized: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        work = Path(tmp)
        reference = _export(base_model(name), work / "fp32.onnx")
        config = json.loads((model_dir(name) / "config.json").read_text())
        fused = optimizer.optimize_model(
            str(work / "fp32.onnx"),
            model_type="bert",
            num_heads=int(config["num_attention_heads"]),
            hidden_size=int(config["hidden_size"]),
            opt_level=1,
        )
        fused.save_model_to_file(str(work / "fused.onnx"))
        floor = MIN_PROBE_COSINE if quantized else MIN_FP32_PROBE_COSINE
        if not quantized:
            os.replace(work / "fused.onnx", work / "model.onnx")
        else:
            quantize_dynamic(
                work / "fused.onnx",
                work / "model.onnx",
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                op_types_to_quantize=["MatMul", "Attention"],
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        got = _Session(work / "model.onnx", threads=0).encode(name, list(PROBES), 256, DEFAULT_BATCH)
        cosine = float((got * reference).sum(axis=1).min())
        if cosine < floor:
            raise PermanentError(
                f"the {'int8' if quantized else 'fp32 ONNX'} build of {name} drifted from torch fp32 "
                f"(probe cosine {cosine:.4f} < {floor})"
            )
        _fsync(work / "model.onnx")
        os.replace(work / "model.onnx", target)
        meta = {
            "recipe": RECIPE,
            "size": target.stat().st_size,
            "sha256": _sha256(target),
            "probe_cosine": cosine,
        }
        (work / "model.json").write_text(json.dumps(meta))
        _fsync(work / "model.json")
        os.replace(work / "model.json", manifest)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _export(base: str, path: Path) -> np.ndarray:
    """Export the fp32 model with pooling and normalisation in the graph; returns its vectors of
    the probe texts (the reference the int8 build is checked against)."""
    for var, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
    ):
        os.environ.setdefault(var, value)
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    model = AutoModel.from_pretrained(str(model_dir(base)), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    pooled = Pooled().eval()
    dummy = torch.ones(2, 16, dtype=torch.long)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            pooled,
            (dummy, dummy),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
            },
            opset_version=17,
            dynamo=False,
        )
        tok = truncating_tokenizer(base, 256)
        out = []
        for text in PROBES:
            enc = tok.encode(text)
            ids = torch.tensor([enc.ids])
            out.append(pooled(ids, torch.ones_like(ids)).numpy()[0])
    return np.stack(out)


class _Session:
    def __init__(self, path: Path, *, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per core
        options.inter_op_num_threads = 1
        # idle intra-op threads sleep instead of spinning: spinning took CPU from everything else
        # in the process (finalize p50 with workers embedding 26.7-29.0 ms spinning, 15.5-19.3 not)
        # and bought no throughput (ingest e2e/bare fp32 2.26-2.32 either way; benchmarks/README)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.dimensions = int(self.session.get_outputs()[0].shape[1])  # [batch, dimensions]

    def encode(self, name: str, texts: list[str], max_tokens: int, batch: int) -> np.ndarray:
        """Vectors of ``texts`` in their order, computed in batches of similar length (little padding)."""
        encodings, batches = token_batches(name, max_tokens, texts, batch)
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for idx in batches:
            width = len(encodings[idx[-1]].ids)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            out[idx] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out  # unit length: the graph ends in L2 normalisation


class Int8Embedder(SlotEmbedder):
    """The bundled model as int8 on ONNX Runtime; same protocol and tokenizer as ``LocalEmbedder``.

    Sessions are shared per process, data dir and ``slot``. ``threads`` is ONNX Runtime's
    intra-op thread count (0: one per core).
    """

    def __init__(
        self,
        name: str,
        *,
        data_dir: Path,
        dimensions: int,
        max_tokens: int,
        batch_size: int = DEFAULT_BATCH,
        threads: int = 0,
        slot: str = "ingest",
    ) -> None:
        self.name = name
        self.model_id = f"local:{name}"
        self.dimensions, self.max_tokens = dimensions, max_tokens
        self.batch_size = batch_size
        self.threads = threads
        self.data_dir = data_dir
        super().__init__(((data_dir.resolve(), name, self.quantized), slot))

    quantized = True

    def _create(self) -> _Session:
        path, _ = ensure_model(self.data_dir, self.name, quantized=self.quantized)
        return _Session(path, threads=self.threads)

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        return model.encode(self.name, texts, self.max_tokens, self.batch_size)


class OnnxFp32Embedder(Int8Embedder):
    """The fp32 model on ONNX Runtime: the same export and fusion as the int8 build, not quantized.
    Its vectors are torch's within float rounding (the build checks probe cosine >= 0.9999;
    measured 1.0000), so it has torch's ``model_id``: the same model, another runtime. One short
    query takes ~5 ms here against ~12 ms through sentence-transformers (benchmarks/README)."""

    quantized = False

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.model_id = f"local:{name}"


class FastQueries:
    """Queries of the fp32 model: on ONNX Runtime fp32 (:class:`OnnxFp32Embedder`) once its file
    is built, on torch meanwhile. The first query starts the build (once per data dir, ~5 s, in a
    thread: no search waits for it); a build that fails leaves torch answering, and says why once
    in the log. Vectors, tokens and ``model_id`` are the same either way."""

    def __init__(self, torch_embedder: SlotEmbedder, onnx: OnnxFp32Embedder) -> None:
        self.torch, self.onnx = torch_embedder, onnx
        self.model_id = torch_embedder.model_id
        self.dimensions, self.max_tokens = torch_embedder.dimensions, torch_embedder.max_tokens
        self._ready = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True

        def build() -> None:
            try:
                self.onnx.warm_up()  # builds the file if needed, then loads the session
                self._ready.set()
            except Exception as exc:  # torch keeps answering
                log.warning(
                    "queries stay on torch: the fp32 ONNX model of %s failed: %s", self.onnx.name, exc
                )

        threading.Thread(target=build, name="onnx-fp32-queries", daemon=True).start()

    def wait_ready(self, timeout: float) -> bool:
        """Start the build if needed and wait for it (tests, benchmarks)."""
        self._start()
        return self._ready.wait(timeout)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._ready.is_set():
            return self.onnx.embed(texts)
        self._start()
        return self.torch.embed(texts)

    def tokenizer(self) -> Tokenizer:
        return self.torch.tokenizer()

    def warm_up(self) -> None:
        self._start()
        self.torch.warm_up()
