"""A real HTTP server on loopback for the tests that need one (streams, browsers): uvicorn in a
thread of the test process, serving ``create_app(settings)`` (:func:`live_server`); or the real
``lorebase serve`` command in a process of its own (:func:`serve_process`).

As with ``conftest.running_app``, a broker test run (``LOREBASE_TEST_EXECUTOR=celery|rq``) gives
the app no worker threads and starts a real ``lorebase worker`` process on the same database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from lorebase.app import create_app
from lorebase.settings import Settings
from support import testdb, testexec
from support.cluster import free_port

#: the dashboard sign-in link ``lorebase serve`` prints with the first API key
SIGN_IN = re.compile(r"http://\S+/login\?token=(\S+?)&next=")


@dataclass
class Live:
    url: str  # http://127.0.0.1:PORT
    app: FastAPI  # app.state.runtime is the server's runtime


@contextmanager
def live_server(settings: Settings, *, workers: int = 2) -> Iterator[Live]:
    """Yields the running server once the app has started."""
    on_broker = testexec.ON_BROKER and workers > 0
    app = create_app(settings, workers=0 if on_broker else workers)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    worker = None
    if on_broker:
        from support.worker import start_worker

        worker = start_worker(
            settings.data_dir, concurrency=workers, LOREBASE_EMBED_BATCH_SIZE=str(settings.embed_batch_size)
        )
    try:
        yield Live(f"http://127.0.0.1:{port}", app)
    finally:
        if worker is not None:
            from support.worker import stop_worker

            stop_worker(worker)
            testexec.forget(settings.data_dir)
        server.should_exit = True
        thread.join(60)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    key: str  # the first API key, as ``serve`` printed it
    log: Path  # the server's stdout and stderr


@contextmanager
def serve_process(tmp_path: Path, *, workers: int, **env: str) -> Iterator[Served]:
    """``python -m lorebase.cli.main serve --workers N`` on a fresh data dir under ``tmp_path``
    (its own PostgreSQL database on PostgreSQL test runs), with ``env`` added to the environment;
    yields once it answers ``/healthz``, and kills it at the end if the test has not stopped it."""
    data_dir, port = tmp_path / "data", free_port()
    environ = {
        **os.environ,
        "LOREBASE_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **env,
    }
    if url := testdb.database_url_for(data_dir):
        environ["LOREBASE_DATABASE_URL"] = url
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "lorebase.cli.main", "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, key = time.monotonic() + 120, None
        while key is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            if found := SIGN_IN.search(log.read_text(errors="replace")):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        key = found.group(1)
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        yield Served(proc, port, key, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


__all__ = ["SIGN_IN", "Live", "Served", "live_server", "serve_process"]
