"""Long-lived objects out of the garbage collector's way.

CPython's cyclic collector scans every tracked object in a full (generation 2) collection, and
it runs in whichever thread happened to allocate, holding the GIL. A process with the embedding
model loaded tracks ~560k objects (torch modules, transformers configs, tokenizer wrappers): one
full collection took 330 ms on the idle machine. Loading the model also *triggers* a series of
them (every few thousand new objects, over a growing heap: 18, 42, 74 … 198 ms in one load),
and any request running meanwhile waits for each; with workers embedding, that made
``finalize`` take up to 300 ms instead of ~25 ms (``benchmarks/README.md``).

So: a model is loaded with the collector paused (:func:`loading`), and what a process keeps for
its whole life (its imports when it starts, each model once loaded) is *frozen* (``gc.freeze``):
moved to the permanent generation, which no collection scans. Reference counting still frees
frozen objects; only a reference cycle among them would outlive its use, and what is frozen here
is meant to stay anyway.

Used by ``assembly.Process.start`` (``serve``, ``worker`` and broker pool processes) and by the
local embedders' model load (``adapters/embedders/local.SlotEmbedder``).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_loading = 0
_was_enabled = True


def freeze_long_lived() -> None:
    """Collect what is garbage now, then freeze every object still alive."""
    with _LOCK:
        _collect_and_freeze()


def _collect_and_freeze() -> None:
    gc.collect()  # garbage first: a frozen cycle would never be freed
    gc.freeze()


@contextmanager
def loading() -> Iterator[None]:
    """Pause cyclic collection while something long-lived is built (several threads may load at
    once: the collector resumes when the last one is done), then freeze what was built."""
    global _loading, _was_enabled
    with _LOCK:
        if _loading == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _loading += 1
    try:
        yield
    finally:
        with _LOCK:
            _loading -= 1
            if _loading == 0:
                _collect_and_freeze()
                if _was_enabled:
                    gc.enable()
