"""The in-process event bus (embedded mode): fan-out, channel isolation, timeouts, unsubscribe,
bounded queues, and thread safety, plus the best-effort publishing helper."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from lorebase.adapters.events import memory
from lorebase.adapters.events.memory import MemoryEventBus
from lorebase.adapters.events.protocol import EventBus, Subscription
from lorebase.services.events import pipeline_channel, publish_pipeline


def test_the_memory_bus_satisfies_the_protocols() -> None:
    bus = MemoryEventBus()
    assert isinstance(bus, EventBus)
    assert isinstance(bus.subscribe("c"), Subscription)


def test_every_subscriber_of_a_channel_gets_each_event_and_other_channels_get_none() -> None:
    bus = MemoryEventBus()
    with bus.subscribe("a") as one, bus.subscribe("a") as two, bus.subscribe("b") as elsewhere:
        bus.publish("a", {"n": 1})
        bus.publish("a", {"n": 2})
        assert [one.get(1), one.get(1)] == [{"n": 1}, {"n": 2}]
        assert [two.get(1), two.get(1)] == [{"n": 1}, {"n": 2}]
        assert elsewhere.get(0.01) is None


def test_get_returns_none_after_the_timeout_and_iteration_ends_when_idle() -> None:
    bus = MemoryEventBus()
    with bus.subscribe("a", idle_timeout=0.05) as sub:
        assert sub.get(0.01) is None
        bus.publish("a", {"n": 1})
        assert list(sub) == [{"n": 1}]


def test_events_are_copies_made_json_safe() -> None:
    bus = MemoryEventBus()
    with bus.subscribe("a") as sub:
        payload: dict[str, Any] = {"items": [1], "when": object()}
        bus.publish("a", payload)
        payload["items"].append(2)
        got = sub.get(1)
    assert got is not None and got["items"] == [1] and isinstance(got["when"], str)


def test_a_closed_subscription_receives_nothing_and_leaves_the_bus() -> None:
    bus = MemoryEventBus()
    sub = bus.subscribe("a")
    sub.close()
    bus.publish("a", {"n": 1})
    assert sub.get(0.01) is None
    assert bus._subscribers == {}
    sub.close()  # idempotent


def test_a_slow_subscriber_keeps_the_newest_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "MAX_PENDING", 3)
    bus = MemoryEventBus()
    with bus.subscribe("a") as sub:
        for n in range(5):
            bus.publish("a", {"n": n})
        assert [sub.get(0.1), sub.get(0.1), sub.get(0.1), sub.get(0.01)] == [
            {"n": 2},
            {"n": 3},
            {"n": 4},
            None,
        ]


def test_concurrent_publishers_lose_nothing_and_keep_their_own_order() -> None:
    bus = MemoryEventBus()
    publishers, per_publisher = 4, 200
    with bus.subscribe("a") as sub:

        def publish(who: int) -> None:
            for n in range(per_publisher):
                bus.publish("a", {"who": who, "n": n})

        threads = [threading.Thread(target=publish, args=(w,)) for w in range(publishers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [sub.get(1) for _ in range(publishers * per_publisher)]
    for who in range(publishers):
        assert [e["n"] for e in got if e and e["who"] == who] == list(range(per_publisher))


def test_publish_pipeline_sends_on_the_pipeline_channel_and_swallows_bus_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FakeRuntime:
        events = MemoryEventBus()

    rt = FakeRuntime()
    with rt.events.subscribe(pipeline_channel("p1")) as sub:
        publish_pipeline(rt, "p1", "status", {"status": "paused"})  # type: ignore[arg-type]
        got = sub.get(1)
    assert got is not None and (got["kind"], got["pipeline_id"], got["status"]) == ("status", "p1", "paused")

    class Broken:
        def publish(self, channel: str, event: dict[str, Any]) -> None:
            raise ConnectionError("bus down")

    rt.events = Broken()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="lorebase.events"):
        publish_pipeline(rt, "p1", "status", {"status": "completed"})  # type: ignore[arg-type]
    assert "bus down" in caplog.text
