"""Dispatch for the broker executors (Celery, RQ): the job table decides, the broker delivers.

A ``Dispatcher`` thread runs in every process of the scaled mode (API nodes and workers). It
wakes when this process enqueues work (``JobQueue.notify``) and every ``jobs.poll_seconds``
otherwise, marks due jobs as dispatched (``JobQueue.due_for_dispatch``) and sends one message per
job, carrying only the job id, to the queue of the job's kind (``crawl``, ``process``,
``embed``), so each kind can be given workers of its own.

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
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from lorebase.services.documents import CRAWL_JOB, EMBED_JOB, PROCESS_JOB
from lorebase.services.notifications import EMAIL_JOB, WEBHOOK_JOB

if TYPE_CHECKING:
    from lorebase.runtime import Runtime
    from lorebase.settings import Settings

log = logging.getLogger("lorebase.dispatch")

#: job type → the kind of queue it is delivered on
#: (notifications ride on ``process``: short jobs, and every deployment has workers for it)
KINDS = {
    CRAWL_JOB: "crawl",
    PROCESS_JOB: "process",
    EMBED_JOB: "embed",
    WEBHOOK_JOB: "process",
    EMAIL_JOB: "process",
}
ALL_KINDS = tuple(dict.fromkeys(KINDS.values()))

#: sends ``(job_id, job_type)`` messages; raises when the broker cannot be reached
Sender = Callable[[Sequence[tuple[str, str]]], None]


def queue_name(prefix: str, kind: str) -> str:
    return f"{prefix}.{kind}"


def kind_of(job_type: str) -> str:
    return KINDS.get(job_type, "process")


def parse_kinds(value: str | None) -> tuple[str, ...]:
    """``"crawl,embed"`` → ("crawl", "embed"); None or empty → every kind. Unknown kinds raise."""
    if not value:
        return ALL_KINDS
    kinds = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown queue kind(s) {', '.join(unknown)}; use any of {', '.join(ALL_KINDS)}")
    return kinds


class Dispatcher:
    def __init__(self, runtime: Runtime, send: Sender, *, batch: int = 500) -> None:
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
                self.runtime.queue.undispatch([job_id for job_id, _ in due])
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


def make_sender(settings: Settings) -> Sender:
    """The sender of the configured broker executor (``celery`` or ``rq``)."""
    if settings.executor == "celery":
        from lorebase.jobs.celery_executor import celery_sender, make_celery

        return celery_sender(make_celery(settings), settings.queue_prefix)
    if settings.executor == "rq":
        from lorebase.jobs.rq_executor import rq_sender

        return rq_sender(settings)
    raise ValueError(f"the {settings.executor!r} executor does not use a broker")
