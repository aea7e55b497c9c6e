"""Events over Redis pub/sub (scaled mode): channel ``c`` is ``{queue_prefix}:events:{c}``, so a
worker on any machine publishes and every API node's subscribers receive it.

Publishing uses the shared client; each subscription holds its own pub/sub connection and waits
for Redis to confirm the ``SUBSCRIBE`` before returning, so nothing published afterwards is missed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from lorebase.adapters.events.protocol import SubscriptionBase

#: how long ``subscribe`` waits for Redis to confirm the subscription
SUBSCRIBE_TIMEOUT = 5.0


class RedisSubscription(SubscriptionBase):
    def __init__(self, client: redis.Redis, name: str, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(name)
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while True:  # the confirmation means Redis has registered us: later publishes reach us
            left = deadline - time.monotonic()
            msg = self.pubsub.get_message(timeout=max(0.0, left)) if left > 0 else None
            if msg is not None and msg["type"] == "subscribe":
                return
            if left <= 0:
                self.close()
                raise redis.TimeoutError(f"Redis did not confirm the subscription to {name}")

    def get(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            msg = self.pubsub.get_message(timeout=left)
            if msg is not None and msg["type"] == "message":
                event: dict[str, Any] = json.loads(msg["data"])
                return event
        return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pubsub.close()


class RedisEventBus:
    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def channel_name(self, channel: str) -> str:
        return f"{self.prefix}:events:{channel}"

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        self.client.publish(self.channel_name(channel), json.dumps(event, default=str))

    def subscribe(self, channel: str, *, idle_timeout: float = 30.0) -> RedisSubscription:
        return RedisSubscription(self.client, self.channel_name(channel), idle_timeout)

    def close(self) -> None:
        """The shared client is closed by its owner (the runtime)."""
