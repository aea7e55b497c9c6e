"""A real HTTP server on loopback for the tests that need one (streams, browsers): uvicorn in a
thread of the test process, serving ``create_app(settings)``.

As with ``conftest.running_app``, a broker test run (``LOREBASE_TEST_EXECUTOR=celery|rq``) gives
the app no worker threads and starts a real ``lorebase worker`` process on the same database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from lorebase.app import create_app
from lorebase.settings import Settings
from support import testexec


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


__all__ = ["Live", "live_server"]
