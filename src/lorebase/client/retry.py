"""When the client sends a call again: the one home of that decision (and of its backoff).

A call is retried when sending it again cannot do its work twice:

* ``safe`` calls (GET, search, preview, validate, feedback, a draft's PATCH): on a broken
  connection, a timeout, 429 and 5xx;
* ``keyed`` calls (the POSTs and PATCHes that create work): the same, because the client sends
  them with an ``Idempotency-Key`` it generated once for the call: the server runs the first
  and replays its answer to every retry; and on 409 ``idempotency_key_in_use`` (a retry that
  arrived while the first attempt, whose answer timed out, still runs on the server);
* ``once`` calls (creating an API key): only when nothing was sent (the connection was refused)
  or the server refused before running it (429).

DELETE is ``safe`` too: when the answer to a delete was lost, the retry's 404 means it is done.
Waits grow exponentially with jitter up to ``max_backoff``; a ``Retry-After`` is honoured up to
``max_retry_after`` (a longer one is not waited for: the error is raised with it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

Safety = Literal["safe", "keyed", "once"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: the server still runs an earlier attempt of the same keyed call (``api/idempotency.py``)
KEY_IN_USE = "idempotency_key_in_use"


@dataclass(frozen=True)
class RetryPolicy:
    #: attempts in all (1: never retry)
    attempts: int = 4
    #: the first wait, doubled at each retry, with up to 50 % jitter
    backoff: float = 0.25
    max_backoff: float = 8.0
    #: a server's Retry-After longer than this is not waited for
    max_retry_after: float = 60.0

    def should_retry(
        self,
        safety: Safety,
        attempt: int,
        *,
        status: int | None = None,
        error: Exception | None = None,
        code: str | None = None,
    ) -> bool:
        """Whether attempt number ``attempt`` (1-based), which ended with ``status`` or ``error``,
        is followed by another."""
        if attempt >= self.attempts:
            return False
        if error is not None:
            return safety != "once" or isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
        if status == 429:
            return True
        if status == 409 and code == KEY_IN_USE:
            return safety == "keyed"
        return status in RETRY_STATUSES and safety != "once"

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``; None-safe for ``retry_after``."""
        wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (1 + random.random() / 2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

    def waits_for(self, retry_after: float | None) -> bool:
        return retry_after is None or retry_after <= self.max_retry_after


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or None."""
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max(0.0, (when - datetime.now(UTC)).total_seconds()) if when.tzinfo else None
