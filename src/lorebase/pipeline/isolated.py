"""Parse and chunk in worker processes, off the GIL of the process that runs the jobs.

Parsing (lxml tree walks, PDF text extraction) and chunking are CPU-bound Python. In the
worker threads of one process they hold the GIL that the crawler's fetch loop, the database
commits and the other workers also need, so a crawl could not use the machine's second core
(``benchmarks/crawl.py``: in-thread parsing capped crawl+parse at ~0.35 of a plain fetch). A
small pool of processes (``jobs.parse_processes``, ``spawn`` so that no worker inherits a
forked copy of locks held by other threads) does that work; a job thread only waits on it.

What crosses the process boundary is small and plain: the document's bytes in, a
:class:`Prepared` (title, leading heading, page count, chunk drafts) or an error message out.
A parser that crashes the process (a native library's segfault, the OOM killer) breaks the
pool: the pool is replaced, and the document's job gets a *transient* error, so it is retried
and, if it keeps killing parsers, ends ``dead`` while the rest of the queue keeps flowing.

``parse_processes = 0`` parses in the calling thread (same results; for debugging and for
machines where extra processes are unwelcome).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from lorebase import faults
from lorebase.adapters.parsers.registry import parse_bytes
from lorebase.errors import LorebaseError, NotFound, PermanentError, TransientError
from lorebase.pipeline.chunk import chunk
from lorebase.pipeline.types import ChunkDraft, ChunkingConfig, ParsedDocument


@dataclass(slots=True)
class Prepared:
    """What the job needs from a parsed document."""

    title: str | None
    leading_heading: str | None
    page_count: int | None
    drafts: list[ChunkDraft]


def parse(data: bytes, media_type: str, filename: str | None) -> ParsedDocument:
    """:func:`parse_bytes` with every failure turned into a :class:`PermanentError` message."""
    try:
        return parse_bytes(data, media_type, filename)
    except NotFound:
        raise PermanentError("the uploaded file is missing from storage") from None
    except LorebaseError as exc:
        raise PermanentError(exc.message) from None
    except Exception as exc:  # parsers are deterministic: an unexpected error will not go away
        raise PermanentError(
            f"could not parse {filename or media_type}: {type(exc).__name__}: {exc}"
        ) from None


def leading_heading(parsed: ParsedDocument) -> str | None:
    """A document that opens with a top-level heading is titled by it (DOCX/HTML without metadata)."""
    first = parsed.blocks[0] if parsed.blocks else None
    return first.text.strip() if first and first.kind == "heading" and first.level == 1 else None


def _tokenizer(embedder: str) -> Any:
    from lorebase.adapters.embedders.local import load_tokenizer  # cached per process

    return load_tokenizer(embedder.partition(":")[2])


def prepare(
    data: bytes, media_type: str, filename: str | None, cfg: ChunkingConfig, embedder: str, max_tokens: int
) -> Prepared:
    """Parse and chunk one document (in whichever process calls it)."""
    faults.poison(data)
    parsed = parse(data, media_type, filename)
    drafts = chunk(parsed, cfg, _tokenizer(embedder), max_tokens=max_tokens)
    return Prepared(parsed.title, leading_heading(parsed), parsed.page_count, drafts)


def _prepare_in_child(*args: Any) -> tuple[str, Any]:
    """The pool's entry point: exceptions become plain messages (custom exceptions do not
    always survive pickling)."""
    try:
        return "ok", prepare(*args)
    except PermanentError as exc:
        return "error", exc.message


def _exit_with_parent(parent: int) -> None:
    """End this parse process once the process that started it is gone. A parse process waits
    on its call queue, whose write end it holds itself, so it would never see the queue close:
    without this, a worker killed (OOM, SIGKILL) or ended without shutting its pool down leaves
    its parse processes blocked forever."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _start_child(niceness: int, parent: int | None = None) -> None:
    """A parse process starts at a lower CPU priority (parsing is batch work: the worker's own
    threads, a crawl's network I/O, heartbeats and API requests come first), watches its
    parent, then imports."""
    if parent is not None:
        if os.getppid() != parent:  # the parent is already gone
            os._exit(0)
        threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    if niceness > 0:
        with contextlib.suppress(OSError, AttributeError):  # not permitted, or not a POSIX system
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + niceness)
    _warm_up()


def _warm_up() -> None:
    """Pay the imports at pool start, not on the first document."""
    import lorebase.adapters.embedders.local
    import lorebase.adapters.parsers.registry  # noqa: F401


class ParsePool:
    """A lazily started pool of ``processes`` parser processes, replaced when one dies."""

    def __init__(self, processes: int, niceness: int = 0) -> None:
        self.processes = processes
        self.niceness = niceness
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_child,
                    initargs=(self.niceness, os.getpid()),
                )
            return self._pool

    def start(self, *, wait: bool = False) -> None:
        """Spawn the processes now (they import the parsers and the tokenizer in the background),
        so the first document does not wait for them. Returns at once unless ``wait``."""
        if self.processes > 0:
            pool = self._executor()
            warming = [pool.submit(_warm_up) for _ in range(self.processes)]
            if wait:
                for future in warming:
                    future.result()

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=True, cancel_futures=True)  # the broken pool already killed its processes

    def prepare_all(
        self, work: list[tuple[bytes, str, str | None, ChunkingConfig, str, int]]
    ) -> list[Prepared | PermanentError]:
        """:func:`prepare` for each argument tuple, all at once across the pool's processes.

        A document's own failure is returned in its place; a dead parser process raises a
        :class:`TransientError` for the whole lot (the job is retried).
        """
        if self.processes <= 0 or not work:
            answers = [_prepare_in_child(*args) for args in work]
            return [value if outcome == "ok" else PermanentError(value) for outcome, value in answers]
        pool = self._executor()
        try:
            futures = [pool.submit(_prepare_in_child, *args) for args in work]
            answers = [future.result() for future in futures]
        except BrokenProcessPool:
            self._discard(pool)
            raise TransientError(
                "a parser process died while parsing this job's documents "
                "(crashed or was killed, e.g. out of memory)"
            ) from None
        return [value if outcome == "ok" else PermanentError(value) for outcome, value in answers]

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_POOLS: dict[tuple[int, int], ParsePool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(processes: int, niceness: int = 0) -> ParsePool:
    """One pool per size and priority for the whole process (runtimes come and go; processes
    stay warm)."""
    with _POOLS_LOCK:
        if (processes, niceness) not in _POOLS:
            _POOLS[processes, niceness] = ParsePool(processes, niceness)
        return _POOLS[processes, niceness]
