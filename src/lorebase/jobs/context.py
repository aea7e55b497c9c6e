"""What a job handler sees: its claimed job, the runtime, fenced transactions and control checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorebase.db.engine import Database
from lorebase.db.models import Pipeline
from lorebase.db.states import PipelineStatus
from lorebase.errors import Interrupted, LeaseLost
from lorebase.jobs.queue import ClaimedJob, JobQueue

if TYPE_CHECKING:
    from lorebase.settings import Settings


class Host(Protocol):
    """What the engine needs of the process it runs in (``lorebase.runtime.Runtime`` is one):
    the database, the job queue and the settings. Handlers get the whole runtime."""

    @property
    def db(self) -> Database: ...

    @property
    def queue(self) -> JobQueue: ...

    @property
    def settings(self) -> Settings: ...


R = TypeVar("R", bound=Host)


class JobContext(Generic[R]):
    def __init__(
        self,
        runtime: R,
        job: ClaimedJob,
        *,
        draining: threading.Event | None = None,
        resumable: bool = False,
    ) -> None:
        self.runtime: R = runtime
        self.job = job
        self.lease_lost = threading.Event()
        #: the task saves checkpoints or progress (its TaskSpec says so): a drain may stop it
        self.resumable = resumable
        self._draining = draining or threading.Event()

    @contextmanager
    def transaction(self, *, progress: bool = False) -> Iterator[Session]:
        """A write transaction that first proves this worker still owns the job (fencing).

        ``progress``: what the transaction writes is progress a later run continues from (an
        embedded batch, a committed crawl batch): once it commits, this attempt does not count
        should it end transiently or lose its worker (``jobs/retry.py``)."""
        with self.runtime.db.session() as s:
            self.runtime.queue.fence(s, self.job, progress=progress)
            yield s

    def check_control(self, *, resumable: bool | None = None) -> None:
        """Called between batches: stop cooperatively on lost lease, pause or cancel, and on a
        drain (SIGTERM) only where the handler can resume from what it saved (``resumable``,
        by default what its task declares): a short job without checkpoints rather finishes
        than starts over."""
        if self.lease_lost.is_set():
            raise LeaseLost(f"job {self.job.id} lost its lease")
        if self.job.pipeline_id:
            with self.runtime.db.read_session() as s:
                status = s.execute(
                    select(Pipeline.status).where(Pipeline.id == self.job.pipeline_id)
                ).scalar()
            if status in (PipelineStatus.CANCELLING, PipelineStatus.CANCELLED):
                raise Interrupted("cancelled")
            if status == PipelineStatus.PAUSED:
                raise Interrupted("paused")
        if (self.resumable if resumable is None else resumable) and self._draining.is_set():
            raise Interrupted("draining")

    def save_checkpoint(self, session: Session, checkpoint: dict[str, Any]) -> None:
        """Save the checkpoint in ``session`` (a fenced transaction); a changed one is progress."""
        self.runtime.queue.save_checkpoint(session, self.job, checkpoint)
        self.job.checkpoint = checkpoint
