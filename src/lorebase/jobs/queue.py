"""Job table semantics: enqueue, claim, lease, heartbeat, fenced transitions, dead letters.

The job row is the only source of truth. A claim takes a lease (owner + expiry) and bumps
``attempts`` and ``claims``; every later write by that worker is *fenced* on ``(id, claims,
lease_owner, status='running')`` so a worker whose lease was taken over changes nothing.
Execution is at-least-once; handlers make their effects idempotent.

Whether a job runs again, when, and whether an attempt counts is not decided here but in
``jobs/retry.py``; this module applies its verdicts to the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from lorebase.db.engine import Database, insert_or_skip
from lorebase.db.models import Job, Pipeline, new_id, utcnow
from lorebase.db.states import PIPELINE_HELD
from lorebase.errors import LeaseLost
from lorebase.jobs import retry
from lorebase.settings import JobSettings


@dataclass(slots=True)
class ClaimedJob:
    """What a worker holds while it runs a job; ``attempts`` + ``owner`` are its fencing token."""

    id: str
    type: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    owner: str
    workspace_id: str
    pipeline_id: str | None
    kb_id: str | None
    document_id: str | None
    checkpoint: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    concurrency_key: str | None = None
    #: the job's claims when this one was taken: with ``owner``, the fencing token
    claims: int = 0


#: called by the reaper, in its transaction, for a job it ends ``dead`` (a lost worker out of
#: attempts): the executor hands it to the task's ``on_failure``
OnDead = Callable[[Session, ClaimedJob, str], None]


class JobQueue:
    def __init__(self, db: Database, cfg: JobSettings) -> None:
        self.db = db
        self.cfg = cfg
        self._listeners: list[Any] = []

    # -- wake-ups ---------------------------------------------------------------------------
    def add_listener(self, callback: Any) -> None:
        """``callback()`` is called after work is enqueued in this process (wakes idle workers)."""
        self._listeners.append(callback)

    def notify(self) -> None:
        for cb in list(self._listeners):
            cb()

    # -- enqueue ----------------------------------------------------------------------------
    def enqueue(
        self,
        session: Session,
        *,
        type: str,
        workspace_id: str,
        payload: dict[str, Any] | None = None,
        pipeline_id: str | None = None,
        kb_id: str | None = None,
        document_id: str | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
    ) -> str | None:
        """Insert a pending job in the caller's transaction; returns its id, or None when a pending
        job with the same ``dedupe_key`` already exists (that one will do the work)."""
        row = self.job_row(
            type=type,
            workspace_id=workspace_id,
            payload=payload,
            pipeline_id=pipeline_id,
            kb_id=kb_id,
            document_id=document_id,
            priority=priority,
            dedupe_key=dedupe_key,
            concurrency_key=concurrency_key,
            run_at=run_at,
            max_attempts=max_attempts,
        )
        if dedupe_key is None:
            session.execute(insert(Job), [row])
            return str(row["id"])
        stmt = insert_or_skip(
            session,
            Job,
            row,
            index_elements=["dedupe_key"],
            index_where=and_(Job.status == "pending", Job.dedupe_key.is_not(None)),
        )
        # RETURNING, not rowcount: the driver's rowcount of an INSERT is not reliable everywhere
        # (psycopg through SQLAlchemy reports -1 whether or not the row went in)
        inserted = session.execute(stmt.returning(Job.id)).scalar()
        return str(inserted) if inserted is not None else None

    def job_row(self, *, type: str, workspace_id: str, **kw: Any) -> dict[str, Any]:
        """A complete row for bulk inserts (``session.execute(insert(Job), rows)``)."""
        now = utcnow()
        return {
            "id": new_id(),
            "type": type,
            "workspace_id": workspace_id,
            "payload": kw.get("payload") or {},
            "pipeline_id": kw.get("pipeline_id"),
            "kb_id": kw.get("kb_id"),
            "document_id": kw.get("document_id"),
            "priority": kw.get("priority") or 0,
            "dedupe_key": kw.get("dedupe_key"),
            "concurrency_key": kw.get("concurrency_key"),
            "status": "pending",
            "attempts": 0,
            "max_attempts": kw.get("max_attempts") or self.cfg.max_attempts,
            "run_at": kw.get("run_at") or now,
            "checkpoint": {},
            "created_at": now,
            "updated_at": now,
        }

    # -- claim ------------------------------------------------------------------------------
    def claim(
        self, owner: str, types: tuple[str, ...] | None = None, *, job_id: str | None = None
    ) -> ClaimedJob | None:
        """Take the most urgent runnable job: highest priority, then oldest ``run_at``.

        With ``job_id`` (a broker executor delivering one job) only that job is taken, and only
        when it is runnable now by the same rules; otherwise None.

        Skips jobs of paused/cancelling pipelines, jobs whose ``concurrency_key`` is held by a
        running job (one embedder loop per pipeline, for example), and jobs of a pipeline or a
        workspace already running its share (``jobs.max_running_per_pipeline`` /
        ``jobs.max_running_per_workspace``), so one huge ingestion cannot take every worker.
        The shares are counted across all workers; on PostgreSQL two claims racing may each see
        the last free slot, so a share can be exceeded by a job for a moment, never for long.
        """
        now = utcnow()
        busy = select(Job.concurrency_key).where(Job.status == "running", Job.concurrency_key.is_not(None))
        held = select(Pipeline.id).where(Pipeline.status.in_(PIPELINE_HELD))
        candidate = (
            select(Job.id)
            .where(
                Job.status == "pending",
                Job.run_at <= now,
                or_(Job.pipeline_id.is_(None), Job.pipeline_id.not_in(held)),
                or_(Job.concurrency_key.is_(None), Job.concurrency_key.not_in(busy)),
            )
            .order_by(Job.priority.desc(), Job.run_at, Job.created_at)
            .limit(1)
        )
        if types:
            candidate = candidate.where(Job.type.in_(types))
        if job_id is not None:
            candidate = candidate.where(Job.id == job_id)
        if self.cfg.max_running_per_pipeline:
            full = (
                select(Job.pipeline_id)
                .where(Job.status == "running", Job.pipeline_id.is_not(None))
                .group_by(Job.pipeline_id)
                .having(func.count() >= self.cfg.max_running_per_pipeline)
            )
            candidate = candidate.where(or_(Job.pipeline_id.is_(None), Job.pipeline_id.not_in(full)))
        if self.cfg.max_running_per_workspace:
            crowded = (
                select(Job.workspace_id)
                .where(Job.status == "running")
                .group_by(Job.workspace_id)
                .having(func.count() >= self.cfg.max_running_per_workspace)
            )
            candidate = candidate.where(Job.workspace_id.not_in(crowded))
        with self.db.session() as s:
            if s.get_bind().dialect.name == "postgresql":
                candidate = candidate.with_for_update(skip_locked=True)
            job_id = s.execute(candidate).scalar()
            if job_id is None:
                return None
            lease_until = now + timedelta(seconds=self.cfg.lease_seconds)
            result = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "pending")
                .values(
                    status="running",
                    attempts=Job.attempts + 1,
                    claims=Job.claims + 1,
                    progressed=False,
                    lease_owner=owner,
                    lease_expires_at=lease_until,
                    heartbeat_at=now,
                    started_at=func.coalesce(Job.started_at, now),
                    updated_at=now,
                )
                .returning(
                    Job.id,
                    Job.type,
                    Job.payload,
                    Job.attempts,
                    Job.max_attempts,
                    Job.workspace_id,
                    Job.pipeline_id,
                    Job.kb_id,
                    Job.document_id,
                    Job.checkpoint,
                    Job.priority,
                    Job.concurrency_key,
                    Job.claims,
                )
            ).first()
            if result is None:
                return None
            if result.pipeline_id:
                s.execute(
                    update(Pipeline)
                    .where(Pipeline.id == result.pipeline_id, Pipeline.status == "queued")
                    .values(status="running", started_at=now, updated_at=now)
                )
            return _claimed(result, owner)

    # -- fenced writes ----------------------------------------------------------------------
    @staticmethod
    def _fence(job: ClaimedJob) -> Any:
        return and_(
            Job.id == job.id,
            Job.claims == job.claims,
            Job.lease_owner == job.owner,
            Job.status == "running",
        )

    def fence(self, session: Session, job: ClaimedJob, *, progress: bool = False) -> None:
        """Prove ownership inside the caller's transaction (and renew the lease), or raise LeaseLost.

        Called first in every transaction a job writes in: on SQLite the transaction already holds
        the write lock, on PostgreSQL the row lock taken here holds until commit, so the reaper
        cannot take the lease between this check and the job's writes. With ``progress`` the
        transaction saves progress: if it commits, this attempt no longer counts should it end
        transiently or lose its worker (``jobs/retry.py``).
        """
        now = utcnow()
        values: dict[str, Any] = {
            "heartbeat_at": now,
            "lease_expires_at": now + timedelta(seconds=self.cfg.lease_seconds),
        }
        if progress:
            values["progressed"] = True
        result = session.execute(update(Job).where(self._fence(job)).values(**values))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(f"job {job.id} attempt {job.attempts} no longer owned by {job.owner}")

    def heartbeat(self, job: ClaimedJob) -> bool:
        """Renew the lease; False when it was lost (taken over, cancelled or finished elsewhere)."""
        try:
            with self.db.session() as s:
                self.fence(s, job)
            return True
        except LeaseLost:
            return False

    def save_checkpoint(self, session: Session, job: ClaimedJob, checkpoint: dict[str, Any]) -> None:
        """Save the job's checkpoint in the caller's (fenced) transaction; a changed checkpoint
        is progress."""
        values: dict[str, Any] = {"checkpoint": checkpoint}
        if checkpoint != job.checkpoint:
            values["progressed"] = True
        session.execute(update(Job).where(self._fence(job)).values(**values))

    @staticmethod
    def _pending_twin(session: Session, job_id: str) -> str | None:
        """Another *pending* job with this job's dedupe key: it will do the same work.

        A job going back to ``pending`` while such a twin exists is closed as superseded instead
        (at most one pending job per dedupe key, enforced by a partial unique index)."""
        key = session.execute(select(Job.dedupe_key).where(Job.id == job_id)).scalar()
        if key is None:
            return None
        return session.execute(
            select(Job.id).where(Job.dedupe_key == key, Job.status == "pending", Job.id != job_id).limit(1)
        ).scalar()

    def _back_to_pending(self, session: Session, job: ClaimedJob, **values: Any) -> str:
        twin = self._pending_twin(session, job.id)
        if twin is not None:
            self._finish(
                session, job, status="cancelled", finished_at=utcnow(), last_error=f"superseded by job {twin}"
            )
            return "superseded"
        self._finish(session, job, status="pending", dispatched_at=None, **values)
        return "pending"

    def _finish(self, session: Session, job: ClaimedJob, **values: Any) -> None:
        now = utcnow()
        values.setdefault("lease_owner", None)
        values.setdefault("lease_expires_at", None)
        values["updated_at"] = now
        result = session.execute(update(Job).where(self._fence(job)).values(**values))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(f"job {job.id} attempt {job.attempts} no longer owned by {job.owner}")
        if job.concurrency_key is not None:
            # a job waiting for this key was delivered while the key was held and set aside:
            # it is dispatched again now rather than after ``redispatch_seconds``
            session.execute(
                update(Job)
                .where(Job.concurrency_key == job.concurrency_key, Job.status == "pending")
                .values(dispatched_at=None)
            )

    def succeed(self, session: Session, job: ClaimedJob) -> None:
        self._finish(session, job, status="succeeded", finished_at=utcnow(), last_error=None, error_kind=None)

    def fail(self, session: Session, job: ClaimedJob, error: str, *, kind: str = "permanent") -> None:
        self._finish(session, job, status="failed", finished_at=utcnow(), last_error=error, error_kind=kind)

    def retry_later(
        self, session: Session, job: ClaimedJob, error: str, *, retry_after: float | None = None
    ) -> tuple[str, float]:
        """A transient error ended the attempt: ``pending`` again after a backoff, or ``dead``,
        as ``retry.after_error`` rules. Returns ``("pending" | "superseded" | "dead", delay)``."""
        progressed = session.execute(select(Job.progressed).where(self._fence(job))).scalar()
        verdict = retry.after_error(
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            progressed=bool(progressed),
            backoff=retry.Backoff.of(self.cfg),
            retry_after=retry_after,
        )
        if verdict.status == "dead":
            self._finish(
                session, job, status="dead", finished_at=utcnow(), last_error=error, error_kind="transient"
            )
            return "dead", 0.0
        outcome = self._back_to_pending(
            session,
            job,
            attempts=job.attempts if verdict.attempts is None else verdict.attempts,
            run_at=utcnow() + timedelta(seconds=verdict.delay),
            last_error=error,
            error_kind="transient",
        )
        return outcome, verdict.delay

    def release(self, session: Session, job: ClaimedJob) -> None:
        """Give the job back untouched (pause, drain): this attempt does not count."""
        self._back_to_pending(session, job, attempts=job.attempts - 1, run_at=utcnow())

    def cancel_running(self, session: Session, job: ClaimedJob, reason: str = "cancelled") -> None:
        self._finish(session, job, status="cancelled", finished_at=utcnow(), last_error=reason)

    # -- maintenance ------------------------------------------------------------------------
    def reap(self, on_dead: OnDead | None = None) -> list[str]:
        """Take back the jobs whose lease expired (their worker was lost), one transaction.

        The lease, not elapsed time, decides: a slow job that heartbeats is never reaped. A job
        with a newer pending twin (same dedupe key) is closed as superseded: the twin, which is
        pending and so covers the same work, does it. Otherwise ``retry.after_loss`` rules:
        ``pending`` again at once (the count started afresh when it saved progress), or ``dead``
        when it is out of attempts without having moved; ``on_dead`` then records the error on
        what the job was working on, in this same transaction. Returns the pipeline ids touched,
        so callers can settle them.
        """
        now = utcnow()
        with self.db.read_session() as s:  # the common case: nothing expired, nothing to write
            if (
                s.execute(
                    select(Job.id).where(Job.status == "running", Job.lease_expires_at < now).limit(1)
                ).first()
                is None
            ):
                return []
        with self.db.session() as s:
            expired = s.execute(
                select(Job).where(Job.status == "running", Job.lease_expires_at < now).order_by(Job.id)
            ).scalars()
            touched: set[str] = set()
            for row in list(expired):
                taken = self._reap_one(s, row, now, on_dead)
                if taken and row.pipeline_id:
                    touched.add(row.pipeline_id)
            return sorted(touched)

    def _reap_one(self, s: Session, row: Job, now: datetime, on_dead: OnDead | None) -> bool:
        held = _claimed(row)
        twin = self._pending_twin(s, row.id)
        values: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "dispatched_at": None,
            "error_kind": "transient",
            "updated_at": now,
        }
        if twin is not None:
            values |= {"status": "cancelled", "finished_at": now}
            values["last_error"] = f"{retry.WORKER_LOST}; superseded by job {twin}"
        else:
            verdict = retry.after_loss(
                attempts=row.attempts, max_attempts=row.max_attempts, progressed=row.progressed
            )
            values |= {"status": verdict.status, "last_error": retry.WORKER_LOST, "run_at": now}
            values["finished_at"] = now if verdict.status == "dead" else None
            if verdict.attempts is not None:
                values["attempts"] = verdict.attempts
        result = s.execute(
            update(Job)
            .where(Job.id == row.id, Job.claims == row.claims, Job.status == "running")
            .where(Job.lease_expires_at < now)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False  # renewed or finished meanwhile (PostgreSQL: another transaction won)
        if values["status"] == "dead" and on_dead is not None:
            on_dead(s, held, retry.WORKER_LOST)
        return True

    # -- broker executors (Celery, RQ) --------------------------------------------------------
    def due_for_dispatch(self, limit: int = 500) -> list[tuple[str, str]]:
        """Mark pending jobs that are runnable now and have no live broker message as dispatched;
        return their ``(id, type)``, most urgent first, for the caller to send.

        A job needs a message when it was never dispatched (``dispatched_at`` NULL: new, retried,
        released or reaped) or when its message went out ``redispatch_seconds`` ago and it still
        has not started (the message was lost). Jobs of paused pipelines wait. Dispatchers in
        several processes may run at once: on PostgreSQL ``SKIP LOCKED`` splits the jobs between
        them; a duplicate message is harmless (claiming a job twice is impossible).
        """
        now = utcnow()
        stale = now - timedelta(seconds=self.cfg.redispatch_seconds)
        held = select(Pipeline.id).where(Pipeline.status.in_(PIPELINE_HELD))
        query = (
            select(Job.id, Job.type)
            .where(
                Job.status == "pending",
                Job.run_at <= now,
                or_(Job.dispatched_at.is_(None), Job.dispatched_at < stale),
                or_(Job.pipeline_id.is_(None), Job.pipeline_id.not_in(held)),
            )
            .order_by(Job.priority.desc(), Job.run_at, Job.created_at)
            .limit(limit)
        )
        with self.db.read_session() as s:  # the common pass: nothing due, nothing to lock or write
            if s.execute(query.with_only_columns(Job.id).limit(1)).first() is None:
                return []
        with self.db.session() as s:
            if s.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(of=Job, skip_locked=True)
            rows = [(str(r.id), str(r.type)) for r in s.execute(query)]
            if rows:
                s.execute(
                    update(Job)
                    .where(Job.id.in_([r[0] for r in rows]), Job.status == "pending")
                    .values(dispatched_at=now)
                )
        return rows

    def undispatch(self, job_ids: list[str]) -> None:
        """The messages of these jobs could not be sent: dispatch them again at the next pass."""
        if job_ids:
            with self.db.session() as s:
                s.execute(
                    update(Job).where(Job.id.in_(job_ids), Job.status == "pending").values(dispatched_at=None)
                )

    def defer_dispatch(self, job_id: str, seconds: float) -> None:
        """A message arrived for a job that cannot run yet (its pipeline is paused, its
        concurrency key or its share is taken): send another in about ``seconds``."""
        due = utcnow() - timedelta(seconds=max(0.0, self.cfg.redispatch_seconds - seconds))
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status == "pending").values(dispatched_at=due))


def _claimed(row: Any, owner: str | None = None) -> ClaimedJob:
    """The attempt a row (a Job, or a row of its columns) holds, as its worker sees it; without
    ``owner``, the row's own lease owner (the reaper's view, for ``on_dead`` hooks)."""
    return ClaimedJob(
        id=row.id,
        type=row.type,
        payload=dict(row.payload or {}),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        owner=owner if owner is not None else (row.lease_owner or ""),
        workspace_id=row.workspace_id,
        pipeline_id=row.pipeline_id,
        kb_id=row.kb_id,
        document_id=row.document_id,
        checkpoint=dict(row.checkpoint or {}),
        priority=row.priority,
        concurrency_key=row.concurrency_key,
        claims=row.claims,
    )
