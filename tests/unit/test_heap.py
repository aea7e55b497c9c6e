"""``lorebase.heap``: long-lived objects are frozen, and no collection runs while a model loads."""

from __future__ import annotations

import gc
import threading
import weakref

from lorebase import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_loading_pauses_collection_then_freezes_what_was_built() -> None:
    assert gc.isenabled()
    with heap.loading():
        assert not gc.isenabled()
        kept = [Node() for _ in range(100)]
        garbage = Node()
        gone = weakref.ref(garbage)
        del garbage
        assert gone() is not None  # no collection while loading
    assert gc.isenabled()
    assert gone() is None  # the load's garbage was collected before the freeze, not frozen
    assert gc.get_freeze_count() >= len(kept)  # what was built now lives in the permanent generation
    # frozen means no collection scans it: a cycle built during the load and dropped afterwards
    # outlives a full collection (the global freeze count is not compared: reference counting
    # frees frozen objects of other tests and threads, so it can go down meanwhile)
    refs = [weakref.ref(n) for n in kept]
    del kept
    gc.collect()
    assert all(r() is not None for r in refs)


def test_overlapping_loads_resume_collection_only_when_the_last_ends() -> None:
    first_in, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with heap.loading():
            first_in.set()
            release.wait(5)

    t = threading.Thread(target=first)
    t.start()
    first_in.wait(5)
    with heap.loading():
        pass
    seen.append(gc.isenabled())  # the first load is still running: still paused
    release.set()
    t.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_a_collector_switched_off_stays_off() -> None:
    gc.disable()
    try:
        with heap.loading():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
