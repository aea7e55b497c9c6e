"""The one place that assembles a process: its runtime, its executor or dispatcher, its tasks.

Every process that runs or sends jobs is built by :func:`assemble`, for its role:

* ``serve``: ``lorebase serve``. In the embedded mode, worker threads (``--workers``; none with
  0: an API-only process); with Celery or RQ, a dispatcher that sends the jobs this process
  enqueues (the transactional outbox, ``jobs/dispatch.py``).
* ``worker``: ``lorebase worker`` with the embedded executor: worker threads on the shared
  database, for the queue kinds given (``--queues``).
* ``pool``: a Celery pool process or an RQ worker (``lorebase worker`` with a broker configures
  it, :func:`run_broker_worker`): an executor with no claiming threads (its heartbeat and
  maintenance threads keep leases, reap and settle) that runs what the broker delivers
  (``jobs/delivery.py``), and a dispatcher.
* ``cli``: ``lorebase ingest`` and ``lorebase eval`` run worker threads while they wait.

All of them take their job types from ``lorebase.tasks.REGISTRY``, settle pipelines with
``services.settle.settle`` after every job, and sweep stranded pipelines and expired drafts in
their maintenance thread. The engine (``jobs/``) knows none of this: it is given it here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Literal

from lorebase.heap import freeze_long_lived
from lorebase.jobs import delivery
from lorebase.jobs.dispatch import Dispatcher, Sender
from lorebase.jobs.executor import EmbeddedExecutor
from lorebase.pipeline.embed import TEXTS_EMBEDDED
from lorebase.pipeline.isolated import pool_for
from lorebase.runtime import Runtime
from lorebase.services import drafts
from lorebase.services.settle import settle, sweep
from lorebase.settings import Settings
from lorebase.tasks import REGISTRY, crawl_source

log = logging.getLogger("lorebase.worker")

Role = Literal["serve", "worker", "pool", "cli"]
#: how often the maintenance thread purges expired drafts
PURGE_SECONDS = 300.0


class _Maintenance:
    """Periodic chores beside the reaper: settle stranded pipelines, purge expired drafts."""

    def __init__(self) -> None:
        self._last_purge = 0.0

    def __call__(self, runtime: Runtime) -> None:
        sweep(runtime)
        if time.monotonic() - self._last_purge > PURGE_SECONDS:
            drafts.purge_expired(runtime)
            self._last_purge = time.monotonic()


def build_executor(
    runtime: Runtime, *, concurrency: int, name: str = "worker", kinds: tuple[str, ...] | None = None
) -> EmbeddedExecutor:
    """The embedded executor over every task, claiming those of the queue ``kinds`` given
    (``("crawl", "process")``: a worker that leaves embedding to others, as ``--queues`` does)."""
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


@dataclass
class Process:
    """A running process's parts. ``stop`` drains the executor (jobs checkpoint and release
    their leases) and closes the runtime it owns."""

    runtime: Runtime
    executor: EmbeddedExecutor | None = None
    dispatcher: Dispatcher | None = None
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
        return self

    def stop(self, *, drain_timeout: float = 30.0) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
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
) -> Process:
    """Build (not start) the process of ``role`` (see the module doc). ``runtime``: one the caller
    already has and keeps (the CLI's); otherwise the process makes its own and closes it."""
    owns = runtime is None
    rt = runtime or Runtime(settings, migrate=role != "pool")  # a pool's parent migrated already
    try:
        if role == "pool":
            executor = build_executor(rt, concurrency=0, name=settings.executor)
            pool_for(settings).start()  # its jobs are delivered to this process's own thread
            dispatcher = Dispatcher(rt, make_sender(settings))
            owner = f"{socket.gethostname()}:{os.getpid()}:{settings.executor}"
            return Process(rt, executor, dispatcher, owner=owner, owns_runtime=owns)
        if role == "serve" and settings.executor != "embedded":  # Celery/RQ workers run the jobs
            return Process(rt, dispatcher=Dispatcher(rt, make_sender(settings)), owns_runtime=owns)
        if role == "serve" and concurrency <= 0:
            return Process(rt, owns_runtime=owns)  # API only: workers run elsewhere
        if role == "worker" and settings.executor != "embedded":
            raise ValueError("a Celery or RQ worker is started with run_broker_worker")
        executor = build_executor(rt, concurrency=concurrency, name=role, kinds=kinds)
        return Process(rt, executor, owns_runtime=owns)
    except BaseException:
        if owns:
            rt.close()  # no connections left behind by a process that cannot start
        raise


def run_broker_worker(settings: Settings, *, concurrency: int, kinds: tuple[str, ...]) -> None:
    """``lorebase worker`` with Celery or RQ: the worker process (and every pool process it forks)
    builds its process with :func:`assemble` on first use; then the broker's worker runs."""
    delivery.configure(lambda: assemble(settings, role="pool").start(freeze_heap=True))
    if settings.executor == "celery":
        from lorebase.jobs.celery_executor import run_worker

        run_worker(settings, concurrency=concurrency, kinds=kinds)
    else:
        from lorebase.jobs.rq_executor import run_worker as run_rq_worker

        run_rq_worker(settings, kinds=kinds)
