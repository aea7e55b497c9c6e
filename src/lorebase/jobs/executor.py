"""The embedded executor: worker threads that claim jobs from the job table.

Runs inside ``lorebase serve`` and as ``lorebase worker`` (same database, another process).
One heartbeat thread renews the leases of every job this process runs; one maintenance
thread reaps expired leases and settles pipelines whose work has ended.

It runs the tasks of the registry it is given (``lorebase.tasks.REGISTRY`` in every real
process; ``types`` narrows what it claims, as ``lorebase worker --queues`` does) and knows none
by name. How an attempt ended is classified by ``jobs/retry.py``, which decides what follows.

``pool`` makes it a worker of one pool (``lorebase worker --pool big``): it takes only the jobs of
workspaces placed in that pool; an executor without one takes only jobs of no pool.

``lanes`` gives job types threads of their own (``{"crawl_source": 1}``): those threads claim
only those types and the ``concurrency`` general threads claim everything else. A crawl waits
on the network for its whole run; in a lane of its own it never holds a thread that would
otherwise parse or embed, and the pages it fetches are processed while it goes on. ``stop(drain=True)``
asks running jobs to checkpoint at their next batch boundary and release their leases.

Short jobs are claimed several at a time (``JobQueue.claim_many``): a thread that needs work
takes the next job claimed ahead by a thread of its group (the general threads, or one lane),
or claims as many as its recent jobs say it will start within ``jobs.prefetch_seconds`` (at most
``jobs.prefetch``; one while it knows nothing yet). Jobs claimed ahead are leased by the
heartbeat thread while they wait, counted when they start (``JobQueue.start``), and released
when the executor stops.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from lorebase import faults
from lorebase.errors import LeaseLost
from lorebase.jobs import retry
from lorebase.jobs.context import Host, JobContext
from lorebase.jobs.queue import ClaimedJob
from lorebase.jobs.registry import Handler, Registry
from lorebase.metrics import JOB_DURATION

log = logging.getLogger("lorebase.jobs")


class EmbeddedExecutor:
    def __init__(
        self,
        runtime: Host,
        registry: Registry | Mapping[str, Handler],
        *,
        types: Iterable[str] | None = None,
        concurrency: int = 2,
        lanes: Mapping[str, int] | None = None,
        name: str = "worker",
        on_settle: Callable[[Any, str], None] | None = None,
        maintenance: Callable[[Any], None] | None = None,
        pool: str | None = None,
    ) -> None:
        self.runtime = runtime
        #: every job type this process knows (a dead job of any of them goes to its on_failure)
        self.registry = registry if isinstance(registry, Registry) else Registry.of_handlers(registry)
        #: the job types this executor claims
        self.types = tuple(self.registry.names() if types is None else types)
        self.concurrency = concurrency
        #: the worker pool whose jobs it takes (``lorebase worker --pool``); None: jobs of no pool
        self.pool = pool
        #: job types with threads of their own, and how many (only types this executor claims)
        self.lanes = {t: n for t, n in (lanes or {}).items() if n > 0 and t in self.types}
        self.owner_prefix = f"{socket.gethostname()}:{os.getpid()}:{name}"
        self.on_settle = on_settle
        self.maintenance = maintenance
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active: dict[str, JobContext[Host]] = {}
        #: jobs claimed ahead, not started, in claim order, by the job types their threads claim
        self._ahead: dict[tuple[str, ...], deque[ClaimedJob]] = {}
        self._active_lock = threading.Lock()
        runtime.queue.add_listener(self._wake.set)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads; with ``concurrency`` 0 (an API-only process) none claims jobs."""
        if self.concurrency > 0:
            general = tuple(t for t in self.types if t not in self.lanes)
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
        pace: float | None = None  # the wall time of this thread's recent jobs (a moving average)
        try:
            while not self._stop.is_set():
                try:
                    job = self._next_job(owner, types, pace)
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
                started = time.monotonic()
                try:
                    self.run_job(job)
                except (
                    Exception
                ):  # bookkeeping failed (database down, broken hook): the reaper recovers the job
                    log.exception("job %s (%s): could not record its outcome", job.id, job.type)
                    self._stop.wait(cfg.poll_seconds)
                took = time.monotonic() - started
                pace = took if pace is None else 0.75 * pace + 0.25 * took
        finally:
            self._release_ahead(types)

    def _next_job(self, owner: str, types: tuple[str, ...], pace: float | None) -> ClaimedJob | None:
        """The next job this thread runs, started: one claimed ahead by its group, else a claim of
        as many as it expects to start within ``jobs.prefetch_seconds`` (the rest go ahead)."""
        queue = self.runtime.queue
        while True:
            with self._active_lock:
                hand = self._ahead.get(types)
                ahead = hand.popleft() if hand else None
            if ahead is None:
                break
            if queue.start(ahead):
                return ahead
        cfg = self.runtime.settings.jobs
        limit = 1 if pace is None else min(cfg.prefetch, 1 + int(cfg.prefetch_seconds / max(pace, 1e-6)))
        jobs = queue.claim_many(owner, types, limit=limit, pool=self.pool)
        if len(jobs) > 1:
            with self._active_lock:
                self._ahead.setdefault(types, deque()).extend(jobs[1:])
            self._wake.set()  # an idle sibling takes the next one now
        return jobs[0] if jobs else None

    def _release_ahead(self, types: tuple[str, ...]) -> None:
        """Give back the jobs claimed ahead for ``types`` (the executor stops): pending again at
        once, no attempt counted."""
        with self._active_lock:
            hand = self._ahead.pop(types, deque())
        for job in hand:
            try:
                with self.runtime.db.connection() as conn:
                    self.runtime.queue.release(conn, job)
            except LeaseLost:
                pass  # taken back meanwhile (reaped, cancelled): not ours to give
            except OperationalError as exc:  # its lease runs out; the reaper takes it back uncounted
                log.warning("could not release job %s claimed ahead: %s", job.id, exc)

    def _heartbeat_loop(self, _name: str) -> None:
        cfg = self.runtime.settings.jobs
        while not self._stop.wait(cfg.heartbeat_seconds):
            if faults.blocked("heartbeat"):
                continue  # fault suite: alive but cut off from the database
            with self._active_lock:
                contexts = list(self._active.values())
                ahead = [job for hand in self._ahead.values() for job in hand]
            for ctx in contexts:
                try:
                    if not self.runtime.queue.heartbeat(ctx.job):
                        ctx.lease_lost.set()
                except OperationalError as exc:
                    log.warning("heartbeat failed for job %s: %s", ctx.job.id, exc)
            for job in ahead:  # a lease lost meanwhile makes its start fail
                try:
                    self.runtime.queue.heartbeat(job)
                except OperationalError as exc:
                    log.warning("heartbeat failed for job %s: %s", job.id, exc)

    def _maintenance_loop(self, _name: str) -> None:
        cfg = self.runtime.settings.jobs
        while not self._stop.wait(cfg.reap_seconds):
            try:
                for pipeline_id in self.runtime.queue.reap(on_dead=self._dead_letter):
                    self._settle(pipeline_id)
                if self.maintenance is not None:
                    self.maintenance(self.runtime)
            except Exception:
                log.exception("maintenance pass failed")

    # -- one job ----------------------------------------------------------------------------
    def run_job(self, job: ClaimedJob) -> None:
        """Run one claimed job and record how it ended (``jobs/retry.py`` decides what next)."""
        handler = self.registry.handler(job.type)
        ctx = JobContext(
            self.runtime, job, draining=self._draining, resumable=self.registry[job.type].resumable
        )
        with self._active_lock:
            self._active[job.id] = ctx
        started, outcome = time.monotonic(), "error"  # "error": the bookkeeping itself failed
        try:
            handler.run(ctx)
            faults.point("job.before_succeed")  # the work is done and saved, the job is not marked
            with self.runtime.db.connection() as conn:
                self.runtime.queue.succeed(conn, job)
            outcome = "succeeded"
        except Exception as exc:
            failure = retry.classify(exc)
            if failure.unexpected:
                log.error("job %s (%s) crashed:\n%s", job.id, job.type, traceback.format_exc())
            outcome = self._ended(handler, ctx, failure)
        finally:
            with self._active_lock:
                self._active.pop(job.id, None)
            JOB_DURATION.labels(job.type, outcome).observe(time.monotonic() - started)
        if job.pipeline_id:
            self._settle(job.pipeline_id)

    def _ended(self, handler: Handler, ctx: JobContext[Host], failure: retry.Failure) -> str:
        """Record an attempt that did not succeed; returns the outcome for the metric."""
        job, queue = ctx.job, self.runtime.queue
        if failure.kind == "lease_lost":
            log.info("job %s attempt %s lost its lease; another worker owns it", job.id, job.attempts)
            return "lease_lost"
        try:
            with self.runtime.db.session() as s:
                if failure.kind == "interrupted":
                    if failure.reason == "cancelled":
                        queue.cancel_running(s, job)
                    else:
                        queue.release(s, job)
                    return failure.reason or "interrupted"
                if failure.kind == "permanent":
                    queue.fail(s, job, failure.message, kind="permanent")
                    handler.on_failure(ctx, s, failure.message, "permanent")
                    return "failed"
                status, delay = queue.retry_later(s, job, failure.message, retry_after=failure.retry_after)
                if status == "dead":
                    handler.on_failure(ctx, s, failure.message, "transient")
                    return "dead"
            if status == "pending":
                log.info("job %s retries in %.1fs: %s", job.id, delay, failure.message)
            return "retried"
        except LeaseLost:  # taken over while it failed: the new owner decides
            return "lease_lost"

    def _dead_letter(self, session: Session, job: ClaimedJob, message: str) -> None:
        """The reaper ended ``job`` dead (its worker lost once too often without progress): its
        task records the error on what it was working on, in the reaper's transaction."""
        if job.type in self.registry:
            handler = self.registry.handler(job.type)
            handler.on_failure(JobContext(self.runtime, job), session, message, "transient")

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
            job = self.runtime.queue.claim(owner, self.types, pool=self.pool)
            if job is None:
                return
            self.run_job(job)
