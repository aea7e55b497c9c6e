"""The worker side of the broker executors (Celery, RQ): run the job a message names.

A worker process holds one ``WorkerState``: its runtime, an ``EmbeddedExecutor`` with no
claiming threads of its own (only its heartbeat and maintenance threads run: leases, the reaper,
the pipeline sweep), and a ``Dispatcher`` that sends the jobs this process enqueues or finds due.
``run_delivered`` claims the named job by the embedded executor's rules and runs it through the
same ``run_job``, so leases, fencing, retries and the dead letter are the same in every mode.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING

from lorebase.jobs.dispatch import Dispatcher, make_sender
from lorebase.settings import Settings, get_settings

if TYPE_CHECKING:
    from lorebase.jobs.executor import EmbeddedExecutor
    from lorebase.runtime import Runtime


log = logging.getLogger("lorebase.worker")


class WorkerState:
    def __init__(self, settings: Settings) -> None:
        from lorebase.pipeline.runner import build_executor
        from lorebase.runtime import Runtime

        self.runtime: Runtime = Runtime(settings, migrate=False)
        try:
            self.runtime.parse_pool.start()
            self.executor: EmbeddedExecutor = build_executor(
                self.runtime, concurrency=0, name=settings.executor
            )
            self.dispatcher = Dispatcher(self.runtime, make_sender(settings))
        except BaseException:
            self.runtime.close()  # no connections left behind by a worker that cannot start
            raise
        self.executor.start()
        self.runtime.executor = self.executor
        self.runtime.dispatcher = self.dispatcher
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{settings.executor}"
        self.dispatcher.start()

    def close(self) -> None:
        from lorebase.pipeline.embed import TEXTS_EMBEDDED

        self.dispatcher.stop()
        self.executor.stop(drain=True, timeout=30)
        self.runtime.close()
        log.info("worker process stopped: %d texts embedded by this process", TEXTS_EMBEDDED.value)


_state: WorkerState | None = None
_state_lock = threading.Lock()


def worker_state() -> WorkerState:
    """This process's state, built on first use from the environment's settings."""
    global _state
    with _state_lock:
        if _state is None:
            _state = WorkerState(get_settings())
        return _state


def close_worker_state() -> None:
    global _state
    with _state_lock:
        state, _state = _state, None
    if state is not None:
        state.close()


def run_delivered(job_id: str) -> str:
    """Claim the job named by a message and run it; its outcome is recorded in the job table.

    Returns ``"ran"``, or ``"skipped"`` when the job was not claimable: already finished or
    taken (a duplicate message), or not runnable yet (its pipeline is paused, its concurrency
    key or share is taken); in that last case another message follows shortly, or at once
    when the job holding the key ends."""
    state = worker_state()
    job = state.runtime.queue.claim(state.owner, job_id=job_id)
    if job is None:
        state.runtime.queue.defer_dispatch(
            job_id, seconds=max(1.0, state.runtime.settings.jobs.poll_seconds * 4)
        )
        return "skipped"
    state.executor.run_job(job)
    return "ran"
