"""Live events contract: publish small JSON-able dicts on named channels, subscribe to a channel.

Channels are plain names (``pipeline:{pipeline_id}``; see ``services/events.py``). Two
implementations, chosen by ``settings.redis_url``: ``memory.py`` (in-process fan-out, embedded
mode) and ``redis.py`` (Redis pub/sub, scaled mode: every API node sees every worker's events).

Behaviour every implementation guarantees:

- **Fire and forget**: no history and no replay. A subscriber receives the events published
  after ``subscribe`` returned, in publish order per publisher; a consumer that needs the current
  state reads it from the database first (events only say that something changed).
- **Best effort**: delivery can be lost (a Redis outage, a subscriber far behind). Callers that
  must not fail, such as jobs, publish through ``services.events`` which logs and swallows errors.
- **Stoppable consumers**: ``Subscription.get(timeout)`` returns ``None`` when nothing arrived in
  time, so a consumer (an SSE stream) can check for a disconnect or send a keep-alive.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Subscription(Protocol):
    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or ``None`` if none arrived within ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Stop receiving; idempotent."""
        ...

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Events until ``idle_timeout`` (given to ``subscribe``) passes with none, or until closed."""
        ...

    def __enter__(self) -> Subscription: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@runtime_checkable
class EventBus(Protocol):
    def publish(self, channel: str, event: dict[str, Any]) -> None:
        """Send ``event`` (JSON-serialisable) to the channel's current subscribers; may raise on
        transport errors (see ``services.events.publish_pipeline`` for the best-effort wrapper)."""
        ...

    def subscribe(self, channel: str, *, idle_timeout: float = 30.0) -> Subscription:
        """A subscription that receives every event published on ``channel`` from now on."""
        ...

    def close(self) -> None:
        """Release connections; open subscriptions stop receiving."""
        ...


class SubscriptionBase:
    """Iteration and ``with`` support on top of ``get`` / ``close``, shared by the implementations."""

    idle_timeout: float = 30.0
    closed: bool = False

    def get(self, timeout: float) -> dict[str, Any] | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self.closed:
            event = self.get(self.idle_timeout)
            if event is None:
                return
            yield event

    def __enter__(self) -> SubscriptionBase:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
