"""Searches while this server ingests: they take turns and keep to a share of the time.

On the embedded default one machine runs the API and the workers. Searches are cheap (~10-15 ms
of CPU each) but a client can send them without pause, and each one takes CPU the embedding
model needs: 20 clients searching back to back cut ingestion by ~30 % on a 2-core machine
(``benchmarks/search_load.py``). So, while this server's own workers run jobs, searches run one
at a time and each is followed by a pause in proportion to what it took: with
``limits.search_share_while_ingesting`` = 0.2, searching uses at most a fifth of the time.
Waiting searches are coroutines (no thread, no CPU); they are answered later, never refused.
Without running jobs, or on an API-only server (``--workers 0``: the work is elsewhere), nothing
is paced. Whether jobs run is read at most once a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from lorebase.runtime import Runtime

T = TypeVar("T")
#: how long the answer to "do this server's workers run jobs?" is reused
BUSY_TTL_SECONDS = 1.0


class SearchPacer:
    def __init__(self) -> None:
        self._turn: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_start = 0.0
        self._busy = False
        self._busy_until = 0.0

    async def run(self, runtime: Runtime, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        share = runtime.settings.limits.search_share_while_ingesting
        if share >= 1 or runtime.settings.workers <= 0 or not await self._ingesting(runtime):
            return await run_in_threadpool(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        if self._turn is None or self._loop is not loop:  # a lock belongs to one event loop
            self._turn, self._loop = asyncio.Lock(), loop
        async with self._turn:
            wait = self._next_start - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.monotonic()
            try:
                return await run_in_threadpool(fn, *args, **kwargs)
            finally:
                took = time.monotonic() - started
                self._next_start = time.monotonic() + took * (1 / share - 1)

    async def _ingesting(self, runtime: Runtime) -> bool:
        if time.monotonic() >= self._busy_until:  # (searches arriving together may each ask once)
            self._busy = await run_in_threadpool(runtime.queue.busy)
            self._busy_until = time.monotonic() + BUSY_TTL_SECONDS
        return self._busy


def install(app: Any) -> None:
    """One pacer per app."""
    app.state.search_pacer = SearchPacer()
