"""Request and token budgets per OpenAI-compatible endpoint, shared by every worker.

A provider's rate limits are per account, not per process: N workers each keeping "its"
requests-per-minute would together send N times too many, get 429s and back off in lock step.
So the budgets are counted where all workers see them: in Redis when ``settings.redis_url`` is
set (the scaled mode), in the process otherwise (the embedded executor: one process), with the
``limits`` package, as the API's own rate limits are (``api/ratelimit.py``).

* requests: a *moving* window (each request's time is kept), so no window of
  ``openai_rate_window_seconds`` ever holds more than ``openai_rpm`` requests. The window is
  counted ``ARRIVAL_MARGIN_SECONDS`` longer than set: the provider counts arrivals, which trail
  the sends by a latency that varies, and a request sent just after the window turns can
  arrive before one sent just before it had (seen at 8 s windows on loopback: 6 arrivals in a
  window of 5 sends);
* tokens: a sliding window *counter* (two counters, not one entry per token), approximate at
  the window's edge, which a token budget (itself counted with an approximate tokenizer) can
  afford.

A request over budget **waits** for it (never fails): waiting is what a budget means, and a
document must not fail because the workers were busy. The token budget is taken first and the
request slot last, right before the request is sent, so the moving window of request slots is
also the window of requests sent. If the storage cannot be reached, requests go out unmetered
(with a warning): the provider's own 429s, retried, are then the limit.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter

log = logging.getLogger("lorebase.embedders")

#: the request window is kept this much longer than set, for the jitter of arrival times
ARRIVAL_MARGIN_SECONDS = 1


class Budget:
    """The budgets of one deployment (every endpoint is counted apart, by its base URL)."""

    def __init__(self, storage: Storage, *, rpm: int | None, tpm: int | None, window_seconds: int) -> None:
        self.window_seconds = window_seconds
        self._requests: tuple[RateLimiter, RateLimitItem] | None = None
        self._tokens: tuple[RateLimiter, RateLimitItem] | None = None
        if rpm:
            item = RateLimitItemPerSecond(
                rpm, window_seconds + ARRIVAL_MARGIN_SECONDS, namespace="openai-requests"
            )
            self._requests = (MovingWindowRateLimiter(storage), item)
        if tpm:
            item = RateLimitItemPerSecond(tpm, window_seconds, namespace="openai-tokens")
            self._tokens = (SlidingWindowCounterRateLimiter(storage), item)

    def acquire(self, endpoint: str, tokens: int) -> float:
        """Take ``tokens`` and one request from ``endpoint``'s budgets, waiting until both have
        room; the seconds waited. A request larger than the whole token budget takes all of it."""
        waited = 0.0
        if self._tokens is not None:
            waited += self._take(*self._tokens, endpoint, min(tokens, self._tokens[1].amount))
        if self._requests is not None:
            waited += self._take(*self._requests, endpoint, 1)
        return waited

    def _take(self, strategy: RateLimiter, item: RateLimitItem, endpoint: str, cost: int) -> float:
        waited = 0.0
        while True:
            try:
                if strategy.hit(item, endpoint, cost=cost):
                    return waited
                stats = strategy.get_window_stats(item, endpoint)
            except StorageError as exc:
                log.warning("embedding budget storage unavailable (%s); request sent unmetered", exc)
                return waited
            # until the oldest counted request leaves the window, plus a little jitter so that
            # workers waiting together do not all ask again in the same millisecond
            delay = min(max(stats.reset_time - time.time(), 0.02), float(item.get_expiry()))
            delay += random.uniform(0, 0.05)
            time.sleep(delay)
            waited += delay


_budgets: dict[tuple[str | None, str, int | None, int | None, int], Budget] = {}
_lock = threading.Lock()


def shared_budget(
    *, redis_url: str | None, prefix: str, rpm: int | None, tpm: int | None, window_seconds: int
) -> Budget | None:
    """The process's budget for these settings (one storage per process, shared by all the
    embedders it builds), or None when no limit is set."""
    if not rpm and not tpm:
        return None
    key = (redis_url, prefix, rpm, tpm, window_seconds)
    with _lock:
        budget = _budgets.get(key)
        if budget is None:
            storage: Storage = (
                RedisStorage(redis_url, key_prefix=f"{prefix}:embed-budget", wrap_exceptions=True)
                if redis_url
                else MemoryStorage()
            )
            budget = _budgets[key] = Budget(storage, rpm=rpm, tpm=tpm, window_seconds=window_seconds)
        return budget
