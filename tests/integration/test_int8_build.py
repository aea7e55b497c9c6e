"""The int8 model is built once per data dir, even by processes that start together, and a build
that fails leaves nothing a later start would trust (``adapters/embedders/int8.py``).

Real processes: each one imports lorebase afresh and calls ``ensure_model`` as a worker does on
its first batch. A full disk is made real with ``RLIMIT_FSIZE`` (writes past the limit fail with
EFBIG, as they would with ENOSPC); a missing package by hiding ``onnxruntime`` from the import
system of that one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from lorebase.adapters.embedders.int8 import _manifest_ok, cache_dir, ensure_model

NAME = "all-MiniLM-L6-v2-int8"

BUILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    limit, hide = int(sys.argv[2]), sys.argv[3]
    if hide:
        sys.modules[hide] = None  # import of it raises ImportError, as when it is not installed
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from lorebase.adapters.embedders.int8 import ensure_model
    from lorebase.errors import LorebaseError
    try:
        path, built = ensure_model(Path(sys.argv[1]), "all-MiniLM-L6-v2-int8")
    except LorebaseError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": exc.message}))
    else:
        print(json.dumps({"path": str(path), "built": built}))
    """
)


def _start(data_dir: Path, *, file_limit: int = 0, hide: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(data_dir), str(file_limit), hide],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def _leftovers(data_dir: Path) -> list[str]:
    folder = cache_dir(data_dir, NAME)
    return sorted(p.name for p in folder.iterdir() if p.name != ".build.lock") if folder.exists() else []


def test_a_failed_build_is_never_trusted_and_processes_starting_together_build_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    folder = cache_dir(data_dir, NAME)
    folder.mkdir(parents=True)
    # an earlier start died mid-write: a model file with no manifest
    (folder / "model.onnx").write_bytes(b"\x08\x07 half an onnx file")

    # a missing package: a clear, permanent error before anything is written
    missing = _result(_start(data_dir, hide="onnxruntime"))
    assert missing["error"] == "PermanentError" and "onnxruntime" in str(missing["message"]), missing

    # a full disk during the build: a clear, retryable error; the temporary files are gone and
    # nothing new claims to be the model
    full = _result(_start(data_dir, file_limit=8 << 20))
    assert full["error"] == "TransientError", full
    assert "could not build the int8 embedding model" in str(full["message"]), full
    assert _leftovers(data_dir) == ["model.onnx"]  # the old half file, still without a manifest
    assert (folder / "model.onnx").read_bytes() == b"\x08\x07 half an onnx file"

    # two workers start together on that data dir: one builds, the other waits and trusts it
    first, second = _start(data_dir), _start(data_dir)
    results = [_result(first), _result(second)]
    assert sorted(bool(r["built"]) for r in results) == [False, True], results
    assert {r["path"] for r in results} == {str(folder / "model.onnx")}
    assert _leftovers(data_dir) == ["model.json", "model.onnx"]
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["size"] == (folder / "model.onnx").stat().st_size > 1 << 20
    assert manifest["probe_cosine"] > 0.97

    # a later start trusts the file; a damaged one is not trusted (it would be built again)
    assert ensure_model(data_dir, NAME) == (folder / "model.onnx", False)
    with (folder / "model.onnx").open("r+b") as f:
        f.truncate(1000)
    assert not _manifest_ok(folder / "model.onnx", folder / "model.json")
