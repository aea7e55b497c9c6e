"""Per-key rate limits on the expensive endpoints (search, uploads and add-sources, finalize).

Each limit is a FastAPI dependency (``RATE_SEARCH``, ``RATE_UPLOAD``, ``RATE_FINALIZE``) put first
in a route's ``dependencies=[...]``: it authenticates the caller (so a bad key gets its 401, never
a 429) and counts the request against the caller's API key (the workspace for the key-less local
principal) in a moving one-minute window of the ``limits`` package. Beyond the limit it raises
``RateLimited``: 429 in the documented error shape with a ``Retry-After`` header. Because it runs
before ``IDEMPOTENT`` claims an ``Idempotency-Key``, a 429 is never stored as a key's answer.
A 429 is answered after ``limits.reject_delay_seconds`` (1 s, at most its Retry-After), so a
client retrying at once is slowed down rather than served rejections as fast as it can ask.

The counters live in the process (``MemoryStorage``) or, when ``settings.redis_url`` is set (the
scaled mode, several API processes), in Redis, so that all processes share them. If Redis cannot
be reached the request is let through (and a warning logged): a limiter outage must not take the
API down. The limits are read from ``settings.limits`` on each request; 0 turns one off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

from fastapi import Depends, Request
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.errors import RateLimited
from lorebase.services.auth import Principal
from lorebase.settings import Settings

log = logging.getLogger("lorebase.api")

_STATE_SLOT = "rate_limiter"
_create_lock = threading.Lock()


class RateLimiter:
    """Moving-window counters per (bucket, caller), in memory or in Redis."""

    def __init__(self, settings: Settings) -> None:
        storage: Storage
        if settings.redis_url:
            storage = RedisStorage(
                settings.redis_url, key_prefix=f"{settings.queue_prefix}:ratelimit", wrap_exceptions=True
            )
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self._items: dict[tuple[str, int], RateLimitItem] = {}

    def _item(self, bucket: str, per_minute: int) -> RateLimitItem:
        item = self._items.get((bucket, per_minute))
        if item is None:
            item = self._items[(bucket, per_minute)] = RateLimitItemPerMinute(per_minute, namespace=bucket)
        return item

    def hit(self, bucket: str, per_minute: int, identity: str) -> None:
        """Count one request of ``identity``; raise ``RateLimited`` when it is over the limit."""
        if per_minute <= 0:
            return
        item = self._item(bucket, per_minute)
        try:
            if self.strategy.hit(item, identity):
                return
            stats = self.strategy.get_window_stats(item, identity)
        except StorageError as exc:  # Redis down: fail open rather than refuse every request
            log.warning("rate limiter storage unavailable (%s); request let through", exc)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"too many {bucket} requests: at most {per_minute} per minute for one API key; "
            f"retry in {retry_after} s",
            retry_after=retry_after,
            details={"limit": per_minute, "window_seconds": 60, "retry_after": retry_after},
        )


def install(app: Any, settings: Settings) -> None:
    """Give the app its limiter (one per app: tests running several apps do not share counts)."""
    setattr(app.state, _STATE_SLOT, RateLimiter(settings))


def get_limiter(request: Request, settings: Settings) -> RateLimiter:
    return app_limiter(request.app, settings)


def app_limiter(app: Any, settings: Settings) -> RateLimiter:
    """The app's limiter (made on first use when ``install`` was not called), for REST routes
    and ``POST /mcp`` alike."""
    limiter: RateLimiter | None = getattr(app.state, _STATE_SLOT, None)
    if limiter is None:
        with _create_lock:
            limiter = getattr(app.state, _STATE_SLOT, None)
            if limiter is None:
                limiter = RateLimiter(settings)
                setattr(app.state, _STATE_SLOT, limiter)
    return limiter


def identity(principal: Principal) -> str:
    """The caller a limit counts against: its API key, or its workspace when it has no key."""
    if principal.key_id:
        return f"key:{principal.key_id}"
    return f"workspace:{principal.workspace_id}"


#: 429 answers held back at once per process (``limits.reject_delay_seconds``); beyond, at once
MAX_DELAYED_REJECTIONS = 1000
_delayed = 0


async def _slow_down(exc: RateLimited, seconds: float) -> None:
    """Hold a 429 back for ``seconds`` (at most its Retry-After) before it is answered.

    A client over its limit that retries at once, ignoring Retry-After, would otherwise get a
    429 per round trip, hundreds a second, each one parsed, authenticated and answered by the
    same CPU that runs the searches and the ingestion (``benchmarks/search_load.py``). Held back,
    each connection gets about one a second; the wait is an ``asyncio`` sleep (no thread)."""
    global _delayed
    if seconds <= 0 or _delayed >= MAX_DELAYED_REJECTIONS:
        return
    _delayed += 1
    try:
        await asyncio.sleep(min(seconds, float(exc.retry_after or seconds)))
    finally:
        _delayed -= 1


def _limit(bucket: str, setting: str) -> Any:
    # the hit runs in the thread pool, so a Redis round trip does not block the event loop; a
    # limit switched off (0) costs no hop at all
    async def dependency(request: Request, runtime: RuntimeDep, principal: PrincipalDep) -> None:
        limits = runtime.settings.limits
        per_minute = int(getattr(limits, setting))
        if per_minute > 0:
            limiter = get_limiter(request, runtime.settings)
            try:
                await run_in_threadpool(limiter.hit, bucket, per_minute, identity(principal))
            except RateLimited as exc:
                await _slow_down(exc, limits.reject_delay_seconds)
                raise

    dependency.__name__ = f"rate_limit_{bucket}"
    return Depends(dependency)


#: ``POST /api/v1/kbs/{id}/search``: ``settings.limits.search_per_minute``
RATE_SEARCH = _limit("search", "search_per_minute")
#: uploads and add-sources (drafts and KBs): ``settings.limits.uploads_per_minute``
RATE_UPLOAD = _limit("upload", "uploads_per_minute")
#: ``POST /api/v1/kb-drafts/{id}/finalize``: ``settings.limits.finalize_per_minute``
RATE_FINALIZE = _limit("finalize", "finalize_per_minute")
