"""Parse and chunk in worker processes, off the GIL of the process that runs the jobs.

Parsing (lxml tree walks, PDF text extraction) and chunking are CPU-bound Python. In the
worker threads of one process they hold the GIL that the crawler's fetch loop, the database
commits and the other workers also need, so a crawl could not use the machine's second core
(``benchmarks/crawl.py``: in-thread parsing capped crawl+parse at ~0.35 of a plain fetch). A
small pool of processes (``jobs.parse_processes``, ``spawn`` so that no worker inherits a
forked copy of locks held by other threads) does that work; a job thread only waits on it.

What crosses the process boundary is small and plain: the document's bytes in, a
:class:`Prepared` (title, leading heading, page count, chunk drafts) or an error message out.

**Hostile files** (``settings.parse``). Each parse process handles one document at a time, so
a failure is always attributed to the document that caused it. Before each document the
process lowers its own soft limits: ``RLIMIT_CPU`` to the CPU time it has used plus
``max_cpu_seconds`` (the kernel then ends it with SIGXCPU), and ``RLIMIT_AS`` to its current
address space plus ``max_memory_mb`` (allocations beyond it fail: a Python ``MemoryError``, or
a native crash); both are lifted again after the document. The parent enforces the wall clock
(``max_seconds``) and kills a process that overruns it. A document whose process stops for one
of these reasons fails *permanently* with the reason ("parsing stopped: the file needed more
than 60 s of CPU time"), a fresh process takes the slot, and the other documents of the job
are unaffected. A process that dies for no reason of ours (SIGKILL from the OOM killer or an
operator) gives the job a *transient* error: it is retried, split into one job per document,
and a document that keeps killing parsers ends ``dead`` while the rest of the queue flows. A
process whose resident memory grew by more than :data:`RECYCLE_RSS_BYTES` is replaced after
its document, so the worker's footprint stays bounded.

``parse_processes = 0`` parses in the calling thread (same results; for debugging and for
machines where extra processes are unwelcome). There, the zip-bomb and XML-entity checks still
apply (they are part of the DOCX parser), but **no CPU, memory or wall-clock limit does**: a
hostile PDF can hold a worker thread or exhaust the worker's memory. Do not use it for
untrusted files.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import resource
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from lorebase import faults
from lorebase.adapters.parsers import ocr, tables, zipguard
from lorebase.adapters.parsers.document import ParsedDocument
from lorebase.adapters.parsers.registry import parse_bytes
from lorebase.child import end_with_parent, lower_priority
from lorebase.errors import LorebaseError, NotFound, PermanentError, TransientError
from lorebase.jobs import retry
from lorebase.pipeline.chunk import chunk
from lorebase.pipeline.types import ChunkDraft, ChunkingConfig
from lorebase.settings import ParseSettings, Settings

#: a parse process whose resident memory grew by more than this is replaced after its document
RECYCLE_RSS_BYTES = 256 * 1024**2
#: how long a new parse process may take to import the parsers before it counts as dead
STARTUP_SECONDS = 300.0
_MIB = 1024**2

Work = tuple[bytes, str, str | None, ChunkingConfig, str, int]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What one document may cost its parse process (see ``settings.parse``)."""

    max_seconds: float
    max_cpu_seconds: int
    max_memory_mb: int
    zip: zipguard.ZipLimits
    max_table_rows: int = ParseSettings().max_table_rows
    ocr_limits: ocr.OcrLimits = field(default_factory=ocr.OcrLimits)

    @classmethod
    def of(cls, parse: ParseSettings) -> ParseLimits:
        return cls(
            parse.max_seconds,
            parse.max_cpu_seconds,
            parse.max_memory_mb,
            zipguard.ZipLimits.of(parse),
            parse.max_table_rows,
            ocr.OcrLimits.of(parse),
        )

    def cpu_message(self) -> str:
        return f"parsing stopped: the file needed more than {self.max_cpu_seconds} s of CPU time"

    def memory_message(self) -> str:
        return f"parsing stopped: the file needed more than {self.max_memory_mb} MiB of memory"

    def wall_message(self) -> str:
        return f"parsing stopped: the file took longer than {self.max_seconds:g} s to parse"


DEFAULT_LIMITS = ParseLimits.of(ParseSettings())


@dataclass(slots=True)
class Prepared:
    """What the job needs from a parsed document."""

    title: str | None
    leading_heading: str | None
    page_count: int | None
    drafts: list[ChunkDraft]
    #: what the parser says of the document (an e-mail's headers and attachments, a cut table's
    #: warning): kept on the document under ``metadata.parsed``
    metadata: dict[str, Any] = field(default_factory=dict)


def parse(data: bytes, media_type: str, filename: str | None) -> ParsedDocument:
    """:func:`parse_bytes` with every failure turned into a :class:`PermanentError` message."""
    try:
        return parse_bytes(data, media_type, filename)
    except MemoryError:
        raise  # the parse process reports it as the memory limit
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


def _tokenizer(ref: str) -> Any:
    """The tokenizer ``adapters.embedders.tokenizer_ref`` named (cached per process)."""
    from lorebase.adapters.embedders import load_tokenizer_ref

    return load_tokenizer_ref(ref)


def prepare(
    data: bytes, media_type: str, filename: str | None, cfg: ChunkingConfig, embedder: str, max_tokens: int
) -> Prepared:
    """Parse and chunk one document (in whichever process calls it)."""
    faults.poison(data)
    parsed = parse(data, media_type, filename)
    drafts = chunk(parsed, cfg, _tokenizer(embedder), max_tokens=max_tokens)
    return Prepared(parsed.title, leading_heading(parsed), parsed.page_count, drafts, dict(parsed.metadata))


def _prepare_in_child(*args: Any) -> tuple[str, Any]:
    """One document: exceptions become plain messages (custom exceptions do not always survive
    pickling)."""
    try:
        return "ok", prepare(*args)
    except PermanentError as exc:
        return "error", exc.message


def _vm_bytes(field: str) -> int:
    """``VmSize``/``VmRSS`` of this process from /proc, in bytes (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _set_soft(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _lift(which: int) -> None:
    _, hard = resource.getrlimit(which)
    resource.setrlimit(which, (hard, hard))


def _run_limited(args: Work, limits: ParseLimits) -> tuple[str, Any]:
    """:func:`_prepare_in_child` under this document's CPU and address-space limits."""
    used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    _set_soft(resource.RLIMIT_CPU, math.ceil(used) + limits.max_cpu_seconds)
    size = _vm_bytes("VmSize")
    if size:
        _set_soft(resource.RLIMIT_AS, size + limits.max_memory_mb * _MIB)
    # Tesseract (a child of this process) inherits both rlimits; the wall clock it gets as a
    # timeout that ends it a little before the parent would kill this process (and orphan it).
    # (a quarter of the limit, at most 5 s: the pipe and a busy machine delay both sides)
    margin = min(5.0, limits.max_seconds / 4)
    ocr.set_deadline(time.monotonic() + limits.max_seconds - margin, limits.wall_message())
    try:
        return _prepare_in_child(*args)
    except MemoryError:
        return "error", limits.memory_message()
    except Exception as exc:  # a bug, not the file's fault: the job's own error handling decides
        return "crash", f"{type(exc).__name__}: {exc}"
    finally:
        _lift(resource.RLIMIT_AS)
        _lift(resource.RLIMIT_CPU)


def _child_main(conn: Connection, niceness: int, parent: int, limits: ParseLimits) -> None:
    """A parse process: warm up, then parse one document per message until told to stop."""
    _start_child(niceness, parent)
    zipguard.set_limits(limits.zip)
    tables.set_max_rows(limits.max_table_rows)
    ocr.set_limits(limits.ocr_limits)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a parser killed by a limit dumps no core
    conn.send(("ready", _vm_bytes("VmRSS")))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        outcome, value = _run_limited(task, limits)
        try:
            conn.send((outcome, value, _vm_bytes("VmRSS")))
        except (BrokenPipeError, OSError):
            return


def _start_child(niceness: int, parent: int | None = None) -> None:
    """A parse process starts at a lower CPU priority (parsing is batch work: the worker's own
    threads, a crawl's network I/O, heartbeats and API requests come first), ends with its parent
    (it waits on its call queue, whose write end it holds itself, so it would never see the queue
    close: a worker killed by the OOM killer would leave it blocked forever), then imports."""
    if parent is not None:
        end_with_parent(parent)
    lower_priority(niceness)
    _warm_up()


def _warm_up() -> None:
    """Pay the imports at pool start, not on the first document."""
    import lorebase.adapters.embedders.local
    import lorebase.adapters.parsers.registry  # noqa: F401


class _Stopped(Exception):
    """The parse process ended while it held a document; ``error`` says what it means."""

    def __init__(self, error: PermanentError | TransientError) -> None:
        super().__init__(error.message)
        self.error = error


def _died(exitcode: int | None, limits: ParseLimits) -> PermanentError | TransientError:
    """What a parse process's death means for the document it held (``retry.parse_process_death``)."""
    cause = retry.parse_process_death(exitcode)
    if cause == "cpu":
        return PermanentError(limits.cpu_message())
    if cause == "crash" and exitcode is not None:
        return PermanentError(
            f"parsing stopped: the parser crashed ({signal.Signals(-exitcode).name}), most likely because "
            f"the file needed more than {limits.max_memory_mb} MiB of memory"
        )
    return TransientError(
        "a parser process died while parsing this job's documents (crashed or was killed, e.g. out of memory)"
    )


class _Process:
    """One spawned parse process and the pipe to it."""

    def __init__(self, niceness: int, limits: ParseLimits) -> None:
        context = multiprocessing.get_context("spawn")  # no forked copies of other threads' locks
        self.conn, child = context.Pipe(duplex=True)
        self.proc = context.Process(
            target=_child_main,
            args=(child, niceness, os.getpid(), limits),
            name="lorebase-parse",
            daemon=True,
        )
        self.proc.start()
        child.close()
        self.limits = limits
        self.base_rss: int | None = None  # known once the process said it is ready
        self.generation = 0

    def _receive(self, timeout: float) -> Any:
        ready = wait([self.conn, self.proc.sentinel], timeout)
        if self.conn in ready:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass
        elif not ready:
            self.kill()
            raise _Stopped(PermanentError(self.limits.wall_message()))
        self.proc.join(5)
        raise _Stopped(_died(self.proc.exitcode, self.limits))

    def wait_ready(self) -> None:
        if self.base_rss is None:
            try:
                _, self.base_rss = self._receive(STARTUP_SECONDS)
            except _Stopped as stopped:  # a process that cannot even start is not the document's fault
                raise _Stopped(TransientError(f"a parser process failed to start: {stopped}")) from None

    def run(self, work: Work) -> tuple[str, Any, int]:
        self.wait_ready()
        try:
            self.conn.send(work)
        except (BrokenPipeError, OSError):
            self.proc.join(5)
            raise _Stopped(_died(self.proc.exitcode, self.limits)) from None
        outcome, value, rss = self._receive(self.limits.max_seconds)
        return outcome, value, rss

    def healthy(self, rss: int) -> bool:
        return self.proc.is_alive() and rss - (self.base_rss or 0) <= RECYCLE_RSS_BYTES

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.kill()
        self.proc.join(5)

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.is_alive():
                self.conn.send(None)
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()
        self.conn.close()


class ParsePool:
    """``processes`` lazily spawned parse processes, each replaced when it dies or is stopped."""

    def __init__(self, processes: int, niceness: int = 0, limits: ParseLimits | None = None) -> None:
        self.processes = processes
        self.niceness = niceness
        self.limits = limits or DEFAULT_LIMITS
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(processes, 1))
        self._idle: list[_Process] = []
        self._all: set[_Process] = set()
        self._generation = 0

    def _spawn(self) -> _Process:
        child = _Process(self.niceness, self.limits)
        child.generation = self._generation
        self._all.add(child)
        return child

    def _checkout(self) -> _Process:
        self._slots.acquire()
        try:
            with self._lock:
                return self._idle.pop() if self._idle else self._spawn()
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, child: _Process, keep: bool) -> None:
        with self._lock:
            keep = keep and child.generation == self._generation
            if keep:
                self._idle.append(child)
            else:
                self._all.discard(child)
        if not keep:
            child.stop()
        self._slots.release()

    def pids(self) -> list[int]:
        """The process ids of the live parse processes."""
        with self._lock:
            return [c.proc.pid for c in self._all if c.proc.pid is not None and c.proc.is_alive()]

    def start(self, *, wait: bool = False) -> None:
        """Spawn the processes now (they import the parsers and the tokenizer in the background),
        so the first document does not wait for them. Returns at once unless ``wait``."""
        if self.processes <= 0:
            return
        with self._lock:
            while len(self._all) < self.processes:
                self._idle.append(self._spawn())
            idle = list(self._idle)
        if wait:
            for child in idle:
                with contextlib.suppress(_Stopped):
                    child.wait_ready()

    def _one(self, work: Work) -> Prepared | PermanentError | TransientError:
        child = self._checkout()
        keep = False
        try:
            outcome, value, rss = child.run(work)
            keep = child.healthy(rss)
        except _Stopped as stopped:
            return stopped.error
        finally:
            self._checkin(child, keep)
        if outcome == "ok":
            return value
        if outcome == "error":
            return PermanentError(value)
        raise RuntimeError(f"parsing failed unexpectedly: {value}")

    def prepare_all(self, work: list[Work]) -> list[Prepared | PermanentError]:
        """:func:`prepare` for each argument tuple, all at once across the pool's processes.

        A document's own failure — including one that ran out of CPU time, memory or wall-clock
        time — is returned in its place as a :class:`PermanentError`; a parse process that died
        for another reason raises a :class:`TransientError` for the whole lot (the job is retried).
        """
        if self.processes <= 0 or not work:
            with (
                zipguard.use_limits(self.limits.zip),
                tables.use_max_rows(self.limits.max_table_rows),
                ocr.use_limits(self.limits.ocr_limits),
            ):
                answers = [_prepare_in_child(*args) for args in work]
            return [value if outcome == "ok" else PermanentError(value) for outcome, value in answers]
        if len(work) == 1:
            results = [self._one(work[0])]
        else:
            width = min(len(work), self.processes)
            with ThreadPoolExecutor(width, thread_name_prefix="parse-dispatch") as dispatch:
                results = list(dispatch.map(self._one, work))
        for result in results:
            if isinstance(result, TransientError):
                raise result
        return [r for r in results if not isinstance(r, TransientError)]

    def shutdown(self) -> None:
        """Stop the idle processes now, the busy ones when their document is done."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
            for child in idle:
                self._all.discard(child)
        for child in idle:
            child.stop()


_POOLS: dict[tuple[int, int, ParseLimits], ParsePool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(processes: int, niceness: int = 0, limits: ParseLimits | None = None) -> ParsePool:
    """One pool per size, priority and limits for the whole process (runtimes come and go;
    processes stay warm)."""
    key = (processes, niceness, limits or DEFAULT_LIMITS)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ParsePool(processes, niceness, key[2])
        return _POOLS[key]


def pool_for(settings: Settings) -> ParsePool:
    """This process's parse pool for ``settings`` (``jobs.parse_processes``, ``parse_niceness``,
    ``parse.*`` limits): the one :func:`shared_pool` of that size, priority and limits."""
    return shared_pool(
        settings.jobs.parse_processes, settings.jobs.parse_niceness, ParseLimits.of(settings.parse)
    )
