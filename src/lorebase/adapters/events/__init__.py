"""Live events: in-process fan-out (embedded) or Redis pub/sub (scaled), picked from the settings.

The Redis module is imported only when a Redis client is given, so the embedded mode does not
need the ``redis`` package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorebase.adapters.events.memory import MemoryEventBus
from lorebase.adapters.events.protocol import EventBus, Subscription

if TYPE_CHECKING:
    from lorebase.settings import Settings

__all__ = ["EventBus", "Subscription", "build_event_bus", "connect_redis"]


def connect_redis(settings: Settings) -> Any | None:
    """The one Redis client a process shares for drafts and events; ``None`` without ``redis_url``.

    Timeouts keep a Redis outage from hanging a request or a job: publishing is best effort and
    a draft request then fails fast instead."""
    if not settings.redis_url:
        return None
    import redis

    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
    )


def build_event_bus(settings: Settings, redis_client: Any | None) -> EventBus:
    """Redis pub/sub when a Redis client is given (``settings.redis_url`` set), else in-process."""
    if redis_client is None:
        return MemoryEventBus()
    from lorebase.adapters.events.redis import RedisEventBus

    return RedisEventBus(redis_client, prefix=settings.queue_prefix)
