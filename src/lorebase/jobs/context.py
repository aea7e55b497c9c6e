"""What a job handler sees: its claimed job, the runtime, fenced transactions and control checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorebase.db.models import Pipeline
from lorebase.errors import Interrupted, LeaseLost
from lorebase.jobs.queue import ClaimedJob

if TYPE_CHECKING:
    from lorebase.runtime import Runtime


class JobContext:
    def __init__(self, runtime: Runtime, job: ClaimedJob, *, draining: threading.Event | None = None) -> None:
        self.runtime = runtime
        self.job = job
        self.lease_lost = threading.Event()
        self._draining = draining or threading.Event()

    @contextmanager
    def transaction(self, *, progress: bool = False) -> Iterator[Session]:
        """A write transaction that first proves this worker still owns the job (fencing).

        ``progress``: what the transaction writes is progress a later run continues from (an
        embedded batch, a committed crawl batch): once it commits, this attempt is given back
        should it end transiently or lose its worker (``jobs/retry.py``)."""
        with self.runtime.db.session() as s:
            self.runtime.queue.fence(s, self.job, progress=progress)
            yield s

    def check_control(self, *, resumable: bool = False) -> None:
        """Called between batches: stop cooperatively on lost lease, pause or cancel, and on a
        drain (SIGTERM) only where the handler can resume from what it saved (``resumable``):
        a short job without checkpoints rather finishes than starts over."""
        if self.lease_lost.is_set():
            raise LeaseLost(f"job {self.job.id} lost its lease")
        if self.job.pipeline_id:
            with self.runtime.db.read_session() as s:
                status = s.execute(
                    select(Pipeline.status).where(Pipeline.id == self.job.pipeline_id)
                ).scalar()
            if status in ("cancelling", "cancelled"):
                raise Interrupted("cancelled")
            if status == "paused":
                raise Interrupted("paused")
        if resumable and self._draining.is_set():
            raise Interrupted("draining")

    def save_checkpoint(self, session: Session, checkpoint: dict[str, Any]) -> None:
        """Save the checkpoint in ``session`` (a fenced transaction); a changed one is progress."""
        self.runtime.queue.save_checkpoint(session, self.job, checkpoint)
        self.job.checkpoint = checkpoint


class Handler(Protocol):
    """A job type's behaviour. ``run`` must be idempotent: it may run more than once."""

    def run(self, ctx: JobContext) -> None: ...

    def on_failure(self, ctx: JobContext, session: Session, message: str, kind: str) -> None:
        """The job ended ``failed`` or ``dead``: record it on what the job was working on."""
        ...
