"""The worker side of the broker executors (Celery, RQ): run the job a message names.

A worker process holds one *process* (``lorebase.assembly.assemble(role="pool")``): its
runtime, an ``EmbeddedExecutor`` with no claiming threads of its own (only its heartbeat and
maintenance threads run: leases, the reaper, the pipeline sweep), and a ``Dispatcher`` that
sends the jobs this process enqueues or finds due. ``run_delivered`` claims the named job by
the embedded executor's rules and runs it through the same ``run_job``, so leases, fencing,
retries and the dead letter are the same in every mode.

The engine does not build processes: ``configure`` is given the function that does (by
``lorebase.assembly`` when ``lorebase worker`` starts a Celery or RQ worker), and the pool
processes forked from that worker inherit it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from lorebase.jobs.context import Host
from lorebase.jobs.executor import EmbeddedExecutor

log = logging.getLogger("lorebase.worker")


class WorkerProcess(Protocol):
    """What a delivered job needs of its process (``lorebase.assembly.Process``)."""

    @property
    def runtime(self) -> Host: ...

    @property
    def executor(self) -> EmbeddedExecutor | None: ...

    @property
    def owner(self) -> str: ...

    def stop(self) -> None: ...


_factory: Callable[[], Any] | None = None
_state: Any = None
_state_lock = threading.Lock()


def configure(factory: Callable[[], WorkerProcess]) -> None:
    """Set how this process (and the pool processes it forks) builds its worker process."""
    global _factory
    _factory = factory


def worker_state() -> WorkerProcess:
    """This process's worker process, built on first use by the configured factory."""
    global _state
    with _state_lock:
        if _state is None:
            if _factory is None:
                raise RuntimeError(
                    "no worker process is configured: start Celery or RQ workers with `lorebase worker`"
                )
            _state = _factory()
        state: WorkerProcess = _state
        return state


def close_worker_state() -> None:
    global _state
    with _state_lock:
        state, _state = _state, None
    if state is not None:
        state.stop()


def run_delivered(job_id: str) -> str:
    """Claim the job named by a message and run it; its outcome is recorded in the job table.

    Returns ``"ran"``, or ``"skipped"`` when the job was not claimable: already finished or
    taken (a duplicate message), or not runnable yet (its pipeline is paused, its concurrency
    key or share is taken); in that last case another message follows shortly, or at once
    when the job holding the key ends."""
    state = worker_state()
    assert state.executor is not None
    # the worker's pool, so a message left on an old pool's queue by a tier change runs nothing
    job = state.runtime.queue.claim(state.owner, job_id=job_id, pool=state.executor.pool)
    if job is None:
        state.runtime.queue.defer_dispatch(
            job_id, seconds=max(1.0, state.runtime.settings.jobs.poll_seconds * 4)
        )
        return "skipped"
    state.executor.run_job(job)
    return "ran"
