"""The one place that assembles a process: its runtime, its executor or dispatcher, its tasks.

Every process that runs or sends jobs is built by :func:`assemble`, for its role:

* ``serve``: ``lorebase serve``. In the embedded mode, worker threads (``--workers``; none with
  0: an API-only process), which ``lorebase serve`` runs in a child process of its own at a lower
  CPU priority (:class:`WorkerChild`, ``jobs.serve_worker_process``); with Celery or RQ, a
  dispatcher that sends the jobs this process enqueues (the transactional outbox,
  ``jobs/dispatch.py``).
* ``worker``: ``lorebase worker`` with the embedded executor: worker threads on the shared
  database, for the queue kinds given (``--queues``).
* ``pool``: a Celery pool process or an RQ worker (``lorebase worker`` with a broker configures
  it, :func:`run_broker_worker`): an executor with no claiming threads (its heartbeat and
  maintenance threads keep leases, reap and settle) that runs what the broker delivers
  (``jobs/delivery.py``), and a dispatcher.
* ``cli``: ``lorebase ingest`` and ``lorebase eval`` run worker threads while they wait.

All of them take their job types from ``lorebase.tasks.REGISTRY``, settle pipelines with
``services.settle.settle`` after every job, and sweep stranded pipelines and tick the scheduler in
their maintenance thread. The engine (``jobs/``) knows none of this: it is given it here.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Literal

from prometheus_client import generate_latest

from lorebase.child import end_with_parent, lower_priority
from lorebase.heap import freeze_long_lived
from lorebase.jobs import delivery
from lorebase.jobs.dispatch import Dispatcher, Sender
from lorebase.jobs.executor import EmbeddedExecutor
from lorebase.jobs.queue import JobQueue
from lorebase.jobs.scheduler import Scheduler
from lorebase.metrics import REGISTRY as INSTRUMENTS
from lorebase.pipeline.embed import TEXTS_EMBEDDED
from lorebase.pipeline.isolated import pool_for
from lorebase.runtime import Runtime
from lorebase.services.settle import settle, sweep
from lorebase.settings import Settings
from lorebase.tasks import REGISTRY, crawl_source

log = logging.getLogger("lorebase.worker")

Role = Literal["serve", "worker", "pool", "cli"]


class _Maintenance:
    """Chores beside the reaper: settle stranded pipelines, tick the scheduler (periodic tasks:
    cleanup, retention, scheduled refreshes; ``jobs/scheduler.py``)."""

    def __init__(self) -> None:
        self._scheduler: Scheduler | None = None

    def __call__(self, runtime: Runtime) -> None:
        sweep(runtime)
        if self._scheduler is None:
            self._scheduler = Scheduler(runtime.db, runtime.queue, REGISTRY, runtime.settings)
        self._scheduler.maybe_tick()


def build_executor(
    runtime: Runtime,
    *,
    concurrency: int,
    name: str = "worker",
    kinds: tuple[str, ...] | None = None,
    pool: str | None = None,
) -> EmbeddedExecutor:
    """The embedded executor over every task, claiming those of the queue ``kinds`` given
    (``("crawl", "process")``: a worker that leaves embedding to others, as ``--queues`` does),
    of the worker ``pool`` given (``--pool``; None: the jobs of no pool)."""
    if concurrency > 0:
        pool_for(runtime.settings).start()  # warm before the first document arrives
    return EmbeddedExecutor(
        runtime,
        REGISTRY,
        types=None if kinds is None else REGISTRY.of_kinds(kinds),
        concurrency=concurrency,
        lanes={crawl_source.NAME: runtime.settings.jobs.crawl_workers},
        name=name,
        on_settle=settle,
        maintenance=_Maintenance(),
        pool=pool,
    )


def make_sender(settings: Settings) -> Sender:
    """The sender of the configured broker executor (``celery`` or ``rq``)."""
    if settings.executor == "celery":
        from lorebase.jobs.celery_executor import celery_sender, make_celery

        return celery_sender(make_celery(settings), settings.queue_prefix, REGISTRY)
    if settings.executor == "rq":
        from lorebase.jobs.rq_executor import rq_sender

        return rq_sender(settings, REGISTRY)
    raise ValueError(f"the {settings.executor!r} executor does not use a broker")


class WorkerChild:
    """The embedded workers of ``lorebase serve`` in a child process (``jobs.serve_worker_process``).

    Worker threads beside the API share its interpreter: every SQL call and thread-pool hop of a
    request gives the GIL away and waits for it behind the workers' Python, and torch or ONNX
    Runtime take both cores. A nice value on the worker *threads* does not help (a request then
    waits for the GIL held by a thread the scheduler keeps off the CPU). In a child process at
    ``jobs.worker_niceness`` the workers still use every cycle the API leaves, and a request
    takes the CPU when it needs it: finalize under an embedding backlog, ``benchmarks/README.md``.

    The child is a ``lorebase worker`` on the same database (``assemble(role="worker")``, heap
    frozen, maintenance thread and all). It is spawned by a supervising thread that restarts it
    (1 s, doubling to 30 s) if it dies; its jobs' leases then expire and are reaped as after any
    crash. Work this process enqueues wakes the child at once through a pipe (one byte per
    ``queue.notify``), so nothing waits for a poll. The child ends the moment this process
    ends (``child.end_with_parent``), and ``stop`` drains it: SIGTERM, running jobs checkpoint and
    release their leases, as ``lorebase worker`` does. Its instruments (job durations, embedding
    latency, crawl fetches) reach the server's ``/metrics`` through a second pipe
    (:meth:`metrics_text`, ``metrics.MergedInstruments``).
    """

    #: restart delays after the child died: first, and the cap of its doubling
    RESTART_SECONDS = (1.0, 30.0)
    #: how long ``/metrics`` waits for the child's instruments
    METRICS_SECONDS = 2.0

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.settings, self.concurrency = settings, concurrency
        self._context = multiprocessing.get_context("spawn")  # no forked copies of other threads' locks
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: BaseProcess | None = None
        self._wake_conn: Connection | None = None  # our end of the wake-up pipe (non-blocking)
        self._metrics_lock = threading.Lock()
        self._metrics_conn: Connection | None = None  # asks the child for its instruments
        self._supervisor: threading.Thread | None = None
        #: how often the child was restarted after it died
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def start(self) -> None:
        # the supervising thread spawns the child and lives as long as it: the kernel's "end with
        # the parent" signal is tied to the thread that spawned it (child.end_with_parent)
        self._supervisor = threading.Thread(target=self._supervise, name="worker-process", daemon=True)
        self._supervisor.start()

    def wake(self) -> None:
        """Tell the child that work was enqueued (a ``JobQueue`` listener). Never blocks: a full
        pipe already holds a wake-up, and a child that is restarting looks for work when it starts."""
        with self._lock:
            if self._wake_conn is not None:
                # full (BlockingIOError: a wake-up is already waiting) or the child is gone
                with contextlib.suppress(OSError):
                    os.write(self._wake_conn.fileno(), b"\0")

    def metrics_text(self) -> str:
        """The child's process-local instruments in the Prometheus text format ("" while it is
        restarting or if it does not answer within :data:`METRICS_SECONDS`), for ``/metrics``."""
        with self._metrics_lock:
            conn = self._metrics_conn
            if conn is None:
                return ""
            try:
                while conn.poll(0):  # a late answer to an earlier request that timed out
                    conn.recv_bytes()
                conn.send_bytes(b"?")
                if conn.poll(self.METRICS_SECONDS):
                    return conn.recv_bytes().decode()
            except (EOFError, OSError):
                pass
            return ""

    def _spawn(self) -> BaseProcess | None:
        reader, writer = self._context.Pipe(duplex=False)
        metrics, child_metrics = self._context.Pipe(duplex=True)
        proc = self._context.Process(
            target=_worker_child_main,
            args=(self.settings, self.concurrency, reader, child_metrics, os.getpid()),
            name="lorebase-worker",
            daemon=False,  # it drains on SIGTERM: multiprocessing must not kill it at exit
        )
        with self._lock:
            if self._stopping.is_set():
                for conn in (reader, writer, metrics, child_metrics):
                    conn.close()
                return None
            proc.start()
            reader.close()
            child_metrics.close()
            os.set_blocking(writer.fileno(), False)
            self._proc, self._wake_conn = proc, writer
        with self._metrics_lock:
            self._metrics_conn = metrics
        return proc

    def _close_pipes(self) -> None:
        with self._lock:
            if self._wake_conn is not None:
                self._wake_conn.close()
            self._wake_conn = None
        with self._metrics_lock:
            if self._metrics_conn is not None:
                self._metrics_conn.close()
            self._metrics_conn = None

    def _supervise(self) -> None:
        first, cap = self.RESTART_SECONDS
        delay = first
        while not self._stopping.is_set():
            proc = self._spawn()
            if proc is None:
                return
            started = time.monotonic()
            proc.join()
            self._close_pipes()
            if self._stopping.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > 4 * cap:  # it ran a good while: a fresh failure
                delay = first
            log.error(
                "the worker process %s exited with code %s; starting a new one in %.0f s",
                proc.pid,
                proc.exitcode,
                delay,
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, cap)

    def stop(self, *, drain_timeout: float = 30.0) -> None:
        """Drain the child (SIGTERM: jobs checkpoint and release their leases) and wait for it."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(drain_timeout + 10)
            if proc.is_alive():
                log.warning("the worker process %s did not drain in time: killed", proc.pid)
                proc.kill()
                proc.join(5)
        if self._supervisor is not None:
            self._supervisor.join(5)
        self._close_pipes()


def _relay_wake_ups(fd: int, queue: JobQueue) -> None:
    """In the worker process: each byte from the server is a ``queue.notify`` (idle threads look
    for work now). Ends when the server closes its end."""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            return
        if not data:
            return
        queue.notify()


def _serve_metrics(conn: Connection) -> None:
    """In the worker process: answer each request with this process's instruments."""
    while True:
        try:
            conn.recv_bytes()
            conn.send_bytes(generate_latest(INSTRUMENTS))
        except (EOFError, OSError):
            return


def _worker_child_main(
    settings: Settings, concurrency: int, wake: Connection, metrics: Connection, parent: int
) -> None:
    """The worker process of ``lorebase serve`` (:class:`WorkerChild`)."""
    end_with_parent(parent, kill_at_once=True)
    lower_priority(settings.jobs.worker_niceness)  # before any thread starts: they all inherit it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "urllib3"):  # as the CLI's own logging
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C reaches the whole process group
        signal.signal(sig, lambda *_: stop.set())
    process = assemble(settings, role="worker", concurrency=concurrency)
    threading.Thread(
        target=_relay_wake_ups, args=(wake.fileno(), process.runtime.queue), name="wake-ups", daemon=True
    ).start()
    threading.Thread(target=_serve_metrics, args=(metrics,), name="metrics", daemon=True).start()
    process.start(freeze_heap=True)
    log.info(
        "worker process %d: %d threads, CPU priority lowered by %d",
        os.getpid(),
        concurrency,
        settings.jobs.worker_niceness,
    )
    stop.wait()
    process.stop(drain_timeout=30)


@dataclass
class Process:
    """A running process's parts. ``stop`` drains the executor (jobs checkpoint and release
    their leases) and closes the runtime it owns."""

    runtime: Runtime
    executor: EmbeddedExecutor | None = None
    dispatcher: Dispatcher | None = None
    #: ``serve``'s workers in a process of their own (``jobs.serve_worker_process``)
    worker_child: WorkerChild | None = None
    #: the lease owner of jobs a broker delivers to this process
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    owns_runtime: bool = True

    def start(self, *, freeze_heap: bool = False) -> Process:
        """Start the threads. ``freeze_heap``: the process's own entry point (``serve``, ``worker``,
        a broker's pool process) freezes what it has imported first, so full garbage collections
        stop scanning it (``lorebase/heap.py``); in-process uses (tests, ``ingest``) leave the heap alone."""
        if freeze_heap:
            freeze_long_lived()
        if self.executor is not None:
            self.executor.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        if self.worker_child is not None:
            self.worker_child.start()
        return self

    def stop(self, *, drain_timeout: float = 30.0) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.worker_child is not None:
            self.worker_child.stop(drain_timeout=drain_timeout)
        running = 0
        if self.executor is not None:
            self.executor.stop(drain=True, timeout=drain_timeout)
            running = self.executor.active_jobs
        if self.owns_runtime:
            self.runtime.close()
        if self.executor is not None:
            log.info(
                "worker process stopped: %d jobs still running, %d texts embedded by this process",
                running,
                TEXTS_EMBEDDED.value,
            )


def assemble(
    settings: Settings,
    *,
    role: Role,
    concurrency: int = 0,
    kinds: tuple[str, ...] | None = None,
    runtime: Runtime | None = None,
    worker_process: bool = False,
    pool: str | None = None,
) -> Process:
    """Build (not start) the process of ``role`` (see the module doc). ``runtime``: one the caller
    already has and keeps (the CLI's); otherwise the process makes its own and closes it.
    ``worker_process``: ``serve``'s worker threads go to a :class:`WorkerChild`. ``pool``: a
    ``worker`` (or a broker's ``pool`` process) that takes only the jobs of that worker pool."""
    owns = runtime is None
    # a pool's parent migrated already; the API process serves searches (Runtime.serving)
    rt = runtime or Runtime(settings, migrate=role != "pool", serving=role == "serve")
    try:
        if role == "pool":
            executor = build_executor(rt, concurrency=0, name=settings.executor, pool=pool)
            pool_for(settings).start()  # its jobs are delivered to this process's own thread
            dispatcher = Dispatcher(rt, make_sender(settings))
            owner = f"{socket.gethostname()}:{os.getpid()}:{settings.executor}"
            return Process(rt, executor, dispatcher, owner=owner, owns_runtime=owns)
        if role == "serve" and settings.executor != "embedded":  # Celery/RQ workers run the jobs
            return Process(rt, dispatcher=Dispatcher(rt, make_sender(settings)), owns_runtime=owns)
        if role == "serve" and concurrency <= 0:
            return Process(rt, owns_runtime=owns)  # API only: workers run elsewhere
        if role == "serve" and worker_process:
            child = WorkerChild(settings, concurrency)
            rt.queue.add_listener(child.wake)
            return Process(rt, worker_child=child, owns_runtime=owns)
        if role == "worker" and settings.executor != "embedded":
            raise ValueError("a Celery or RQ worker is started with run_broker_worker")
        executor = build_executor(rt, concurrency=concurrency, name=role, kinds=kinds, pool=pool)
        return Process(rt, executor, owns_runtime=owns)
    except BaseException:
        if owns:
            rt.close()  # no connections left behind by a process that cannot start
        raise


def run_broker_worker(
    settings: Settings, *, concurrency: int, kinds: tuple[str, ...], pool: str | None = None
) -> None:
    """``lorebase worker`` with Celery or RQ: the worker process (and every pool process it forks)
    builds its process with :func:`assemble` on first use; then the broker's worker runs, on the
    queues of ``pool`` when one is given (``<prefix>.<kind>.<pool>``)."""
    delivery.configure(lambda: assemble(settings, role="pool", pool=pool).start(freeze_heap=True))
    if settings.executor == "celery":
        from lorebase.jobs.celery_executor import run_worker

        run_worker(settings, concurrency=concurrency, kinds=kinds, pool=pool)
    else:
        from lorebase.jobs.rq_executor import run_worker as run_rq_worker

        run_rq_worker(settings, kinds=kinds, pool=pool)
