"""In-process events (embedded mode): each subscription is a bounded queue that ``publish`` fans
out to under a lock. A subscriber that falls more than ``MAX_PENDING`` events behind loses the
oldest ones (events are best effort) rather than growing without bound."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from typing import Any

from lorebase.adapters.events.protocol import SubscriptionBase

MAX_PENDING = 1000


class MemorySubscription(SubscriptionBase):
    def __init__(self, bus: MemoryEventBus, channel: str, idle_timeout: float) -> None:
        self.bus, self.channel, self.idle_timeout = bus, channel, idle_timeout
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(MAX_PENDING)

    def deliver(self, event: dict[str, Any]) -> None:
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.queue.get_nowait()  # drop the oldest

    def get(self, timeout: float) -> dict[str, Any] | None:
        if self.closed:
            return None
        try:
            return self.queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        self.bus.unsubscribe(self)


class MemoryEventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[MemorySubscription]] = {}

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        # a copy through JSON: subscribers get what the Redis bus would give them, never a shared dict
        payload = json.loads(json.dumps(event, default=str))
        with self._lock:
            targets = list(self._subscribers.get(channel, ()))
        for sub in targets:
            sub.deliver(payload)

    def subscribe(self, channel: str, *, idle_timeout: float = 30.0) -> MemorySubscription:
        sub = MemorySubscription(self, channel, idle_timeout)
        with self._lock:
            self._subscribers.setdefault(channel, set()).add(sub)
        return sub

    def unsubscribe(self, sub: MemorySubscription) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[sub.channel]

    def close(self) -> None:
        with self._lock:
            subs = [s for group in self._subscribers.values() for s in group]
            self._subscribers.clear()
        for sub in subs:
            sub.closed = True
