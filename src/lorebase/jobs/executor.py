"""The embedded executor: worker threads that claim jobs from the job table.

Runs inside ``lorebase serve`` and as ``lorebase worker`` (same database, another process).
One heartbeat thread renews the leases of every job this process runs; one maintenance
thread reaps expired leases and settles pipelines whose work has ended.

``lanes`` gives job types threads of their own (``{"crawl_source": 1}``): those threads claim
only those types and the ``concurrency`` general threads claim everything else. A crawl waits
on the network for its whole run; in a lane of its own it never holds a thread that would
otherwise parse or embed, and the pages it fetches are processed while it goes on. ``stop(drain=True)``
asks running jobs to checkpoint at their next batch boundary and release their leases.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from lorebase import faults
from lorebase.errors import Interrupted, LeaseLost, PermanentError, TransientError
from lorebase.jobs.context import Handler, JobContext
from lorebase.jobs.queue import ClaimedJob
from lorebase.metrics import JOB_DURATION

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.jobs")


def describe(exc: BaseException) -> str:
    """A readable one-line message for users (type name only when the message is empty)."""
    msg = str(exc).strip() or type(exc).__name__
    return msg if len(msg) <= 2000 else msg[:2000] + "…"


class EmbeddedExecutor:
    def __init__(
        self,
        runtime: Runtime,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 2,
        lanes: Mapping[str, int] | None = None,
        name: str = "worker",
        on_settle: Callable[[Runtime, str], None] | None = None,
        maintenance: Callable[[Runtime], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        #: job types with threads of their own, and how many (only types this executor handles)
        self.lanes = {t: n for t, n in (lanes or {}).items() if n > 0 and t in self.handlers}
        self.owner_prefix = f"{socket.gethostname()}:{os.getpid()}:{name}"
        self.on_settle = on_settle
        self.maintenance = maintenance
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active: dict[str, JobContext] = {}
        self._active_lock = threading.Lock()
        runtime.queue.add_listener(self._wake.set)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads; with ``concurrency`` 0 (an API-only process) none claims jobs."""
        if self.concurrency > 0:
            general = tuple(t for t in self.handlers if t not in self.lanes)
            for i in range(self.concurrency if general else 0):
                self._spawn(self._work_loop, f"{self.owner_prefix}-{i}", general)
            for job_type, n in self.lanes.items():
                for i in range(n):
                    self._spawn(self._work_loop, f"{self.owner_prefix}-{job_type}-{i}", (job_type,))
        self._spawn(self._heartbeat_loop, f"{self.owner_prefix}-heartbeat")
        self._spawn(self._maintenance_loop, f"{self.owner_prefix}-maintenance")

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=(name, *args), name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop claiming; with ``drain`` running jobs checkpoint and release their leases."""
        if drain:
            self._draining.set()
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def drain(self) -> None:
        """Ask running jobs to checkpoint at their next batch boundary and release their leases
        (a Celery pool process told its worker is shutting down); claiming is not affected."""
        self._draining.set()

    @property
    def active_jobs(self) -> int:
        with self._active_lock:
            return len(self._active)

    # -- loops ------------------------------------------------------------------------------
    def _work_loop(self, owner: str, types: tuple[str, ...]) -> None:
        cfg = self.runtime.settings.jobs
        while not self._stop.is_set():
            try:
                job = self.runtime.queue.claim(owner, types)
            except OperationalError as exc:  # database briefly unavailable: back off, keep going
                log.warning("claim failed: %s", exc)
                self._stop.wait(cfg.poll_seconds * 4)
                continue
            if job is None:
                # jittered, so idle threads do not all look at the same moment (a job written by
                # another process would then wait a whole period instead of half of one)
                self._wake.wait(cfg.poll_seconds * random.uniform(0.5, 1.5))
                self._wake.clear()
                continue
            try:
                self.run_job(job)
            except Exception:  # bookkeeping failed (database down, broken hook): the reaper recovers the job
                log.exception("job %s (%s): could not record its outcome", job.id, job.type)
                self._stop.wait(cfg.poll_seconds)

    def _heartbeat_loop(self, _name: str) -> None:
        cfg = self.runtime.settings.jobs
        while not self._stop.wait(cfg.heartbeat_seconds):
            if faults.blocked("heartbeat"):
                continue  # fault suite: alive but cut off from the database
            with self._active_lock:
                contexts = list(self._active.values())
            for ctx in contexts:
                try:
                    if not self.runtime.queue.heartbeat(ctx.job):
                        ctx.lease_lost.set()
                except OperationalError as exc:
                    log.warning("heartbeat failed for job %s: %s", ctx.job.id, exc)

    def _maintenance_loop(self, _name: str) -> None:
        cfg = self.runtime.settings.jobs
        while not self._stop.wait(cfg.reap_seconds):
            try:
                for pipeline_id in self.runtime.queue.reap():
                    self._settle(pipeline_id)
                if self.maintenance is not None:
                    self.maintenance(self.runtime)
            except Exception:
                log.exception("maintenance pass failed")

    # -- one job ----------------------------------------------------------------------------
    def run_job(self, job: ClaimedJob) -> None:
        handler = self.handlers[job.type]
        ctx = JobContext(self.runtime, job, draining=self._draining)
        with self._active_lock:
            self._active[job.id] = ctx
        queue = self.runtime.queue
        started, outcome = time.monotonic(), "error"  # "error": the bookkeeping itself failed
        try:
            handler.run(ctx)
            faults.point("job.before_succeed")  # the work is done and saved, the job is not marked
            with self.runtime.db.session() as s:
                queue.succeed(s, job)
            outcome = "succeeded"
        except LeaseLost:
            outcome = "lease_lost"
            log.info("job %s attempt %s lost its lease; another worker owns it", job.id, job.attempts)
        except Interrupted as stop:
            outcome = stop.reason
            with contextlib.suppress(LeaseLost):
                self._interrupted(job, stop.reason)
        except PermanentError as exc:
            outcome = "failed"
            with contextlib.suppress(LeaseLost):
                self._failed(handler, ctx, describe(exc), "permanent")
        except TransientError as exc:
            outcome = "retried"
            with contextlib.suppress(LeaseLost):
                outcome = self._transient(handler, ctx, describe(exc), exc.retry_after)
        except Exception as exc:  # unknown: treat as transient, bounded by max_attempts
            outcome = "retried"
            log.error("job %s (%s) crashed:\n%s", job.id, job.type, traceback.format_exc())
            with contextlib.suppress(LeaseLost):
                outcome = self._transient(handler, ctx, f"{type(exc).__name__}: {describe(exc)}", None)
        finally:
            with self._active_lock:
                self._active.pop(job.id, None)
            JOB_DURATION.labels(job.type, outcome).observe(time.monotonic() - started)
        if job.pipeline_id:
            self._settle(job.pipeline_id)

    def _interrupted(self, job: ClaimedJob, reason: str) -> None:
        with self.runtime.db.session() as s:
            if reason == "cancelled":
                self.runtime.queue.cancel_running(s, job)
            else:
                self.runtime.queue.release(s, job)

    def _failed(self, handler: Handler, ctx: JobContext, message: str, kind: str) -> None:
        with self.runtime.db.session() as s:
            self.runtime.queue.fail(s, ctx.job, message, kind=kind)
            handler.on_failure(ctx, s, message, kind)

    def _transient(self, handler: Handler, ctx: JobContext, message: str, retry_after: float | None) -> str:
        """Retry later or, out of attempts, dead; returns "retried" or "dead" (for the metric)."""
        with self.runtime.db.session() as s:
            outcome, delay = self.runtime.queue.retry_later(s, ctx.job, message, retry_after=retry_after)
            if outcome == "dead":
                handler.on_failure(ctx, s, message, "transient")
        if outcome == "pending":
            log.info("job %s retries in %.1fs: %s", ctx.job.id, delay, message)
        return "dead" if outcome == "dead" else "retried"

    def _settle(self, pipeline_id: str) -> None:
        if self.on_settle is None:
            return
        try:
            self.on_settle(self.runtime, pipeline_id)
        except Exception:
            log.exception("settling pipeline %s failed", pipeline_id)

    # -- helpers for the CLI and tests ------------------------------------------------------
    def run_until_idle(self, *, timeout: float = 600.0) -> None:
        """Claim and run jobs in the calling thread until none is runnable now (tests, CLI)."""
        deadline = time.monotonic() + timeout
        owner = f"{self.owner_prefix}-inline"
        while time.monotonic() < deadline:
            job = self.runtime.queue.claim(owner, tuple(self.handlers))
            if job is None:
                return
            self.run_job(job)
