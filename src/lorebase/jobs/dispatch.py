"""Dispatch for the broker executors (Celery, RQ): the job table decides, the broker delivers.

A ``Dispatcher`` thread runs in every process of the scaled mode (API nodes and workers). It
wakes when this process enqueues work (``JobQueue.notify``) and every ``jobs.poll_seconds``
otherwise, marks due jobs as dispatched (``JobQueue.due_for_dispatch``) and sends one message per
job, carrying only the job id, to the queue of the job's kind (``crawl``, ``process``,
``embed``), so each kind can be given workers of its own; a job of a workspace placed in a
worker pool goes to that kind's queue of the pool (``<prefix>.<kind>.<pool>``).

This is the transactional-outbox pattern: a job is a committed row before any message exists,
so a crash between commit and send loses nothing; the next pass (any process's) sends it. The
same pass is the reconciler: jobs whose retry delay has passed, jobs the reaper returned after a
lost worker, and jobs whose message was lost (``jobs.redispatch_seconds``) are all simply due.
Messages may be duplicated; a worker runs a job only if it can claim it (``JobQueue.claim``
with ``job_id``), so a duplicate finds nothing to do.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence

from sqlalchemy.exc import OperationalError

from lorebase.jobs.context import Host

log = logging.getLogger("lorebase.dispatch")

#: a job due for a message: ``(job_id, job_type, pool)``
Due = tuple[str, str, str | None]
#: sends one message per due job; raises when the broker cannot be reached
Sender = Callable[[Sequence[Due]], None]


def queue_name(prefix: str, kind: str, pool: str | None = None) -> str:
    """The broker queue of one kind of job (``lorebase.crawl``, ``lorebase.process`` …), or of
    one kind in one worker pool (``lorebase.process.big``: ``lorebase worker --pool big``)."""
    return f"{prefix}.{kind}" if pool is None else f"{prefix}.{kind}.{pool}"


class Dispatcher:
    def __init__(self, runtime: Host, send: Sender, *, batch: int = 500) -> None:
        self.runtime = runtime
        self.send = send
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        runtime.queue.add_listener(self._wake.set)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="lorebase-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def dispatch_once(self) -> int:
        """One pass: send every due job (in batches); returns how many messages went out."""
        sent = 0
        while not self._stop.is_set():
            due = self.runtime.queue.due_for_dispatch(self.batch)
            if not due:
                break
            try:
                self.send(due)
            except Exception as exc:
                # the broker is away: the jobs stay pending and are dispatched once it is back
                self.runtime.queue.undispatch([job_id for job_id, _, _ in due])
                log.warning("could not send %d job message(s): %s", len(due), exc)
                raise
            sent += len(due)
            if len(due) < self.batch:
                break
        return sent

    def _loop(self) -> None:
        poll = self.runtime.settings.jobs.poll_seconds
        failures = 0
        while not self._stop.is_set():
            try:
                self.dispatch_once()
                failures = 0
            except OperationalError as exc:
                failures += 1
                log.warning("dispatch pass failed (database): %s", exc)
            except Exception:
                failures += 1
                if failures == 1:
                    log.exception("dispatch pass failed")
            # after failures, wait longer (bounded), so an outage is not hammered
            delay = poll * min(2**failures, 60) if failures else poll
            self._wake.wait(delay * random.uniform(0.5, 1.5))
            self._wake.clear()
