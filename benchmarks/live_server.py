"""A real ``lorebase serve`` for the HTTP benchmarks (finalize, search_load, search_http).

:func:`live_server` creates an API key with the CLI on the data dir, starts the server on a free
loopback port with the given environment, waits for ``/healthz`` and yields ``(base URL, key,
server log path)``; at the end it stops the server cleanly (SIGTERM: the query log's queue is
written), killing it after 60 s. The environment drops the variables that would point the CLI or
the server elsewhere (``LOREBASE_SERVER_URL``, ``LOREBASE_DATABASE_URL`` ...).

A benchmark imports it after ``httpx`` (see the ``sys.path`` note in each script: this folder's
``queue.py`` must not shadow the stdlib module), with ``sys.path.append`` of this folder.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 30 values is the largest: rank ceil(0.99 * 30) = 30)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def server_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "LOREBASE_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(extra or {}),
    }
    for var in ("LOREBASE_SERVER_URL", "LOREBASE_API_KEY", "LOREBASE_DATABASE_URL", "LOREBASE_REDIS_URL"):
        env.pop(var, None)  # the CLI and the server work on this data dir, not on a configured server
    return env


@contextmanager
def live_server(
    data_dir: Path, *, workers: int, log_dir: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, str, Path]]:
    env = server_env(data_dir, extra_env)
    key = (
        subprocess.run(
            [str(BIN / "lorebase"), "keys", "create", "--name", "bench"],
            env=env,
            cwd=log_dir,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    log_path = log_dir / "server.log"
    with log_path.open("w") as server_log:
        server = subprocess.Popen(
            [
                str(BIN / "lorebase"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=log_dir,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"server exited: {log_path.read_text()}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start in 60 s")
                time.sleep(0.1)
            yield base, key, log_path
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def wait_for_query_model(data_dir: Path, timeout: float = 120.0) -> None:
    """Wait until the server's fp32 ONNX query model is built (its manifest is written last;
    ``LOREBASE_ONNX_QUERIES``, on by default): a benchmark measures searches after that."""
    if os.environ.get("LOREBASE_ONNX_QUERIES", "true").lower() in ("0", "false", "no", "off"):
        return
    manifest = data_dir / "models" / "all-MiniLM-L6-v2-onnx-fp32" / "model.json"
    deadline = time.monotonic() + timeout
    while not manifest.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the server built no fp32 ONNX query model in {timeout:.0f} s")
        time.sleep(0.2)
    time.sleep(1.0)  # the server loads the session after the manifest is written
