"""Job table semantics: enqueue, claim, lease, heartbeat, fenced transitions, dead letters.

The job row is the only source of truth. A claim takes a lease (owner + expiry) and bumps
``attempts`` and ``claims``; every later write by that worker is *fenced* on ``(id, claims,
lease_owner, status='running')`` so a worker whose lease was taken over changes nothing.
Execution is at-least-once; handlers make their effects idempotent.

Whether a job runs again, when, and whether an attempt counts is not decided here but in
``jobs/retry.py``; this module applies its verdicts to the rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, text, update
from sqlalchemy.orm import Session

from lorebase.db.engine import Database, insert_or_skip
from lorebase.db.models import Job, Pipeline, Workspace, new_id, utcnow
from lorebase.db.states import PIPELINE_HELD
from lorebase.errors import LeaseLost
from lorebase.jobs import retry
from lorebase.jobs.statements import Statements
from lorebase.settings import JobSettings

#: the advisory lock claims take turns on when a share is set (PostgreSQL; any fixed 64-bit key)
CLAIM_LOCK_KEY = 0x6C6F7265_636C6169  # "lore" "clai"
_CLAIM_TURN = text("SELECT pg_advisory_xact_lock(:key)")


@dataclass(slots=True)
class ClaimedJob:
    """What a worker holds while it runs a job; ``claims`` + ``owner`` are its fencing token."""

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
    #: claimed ahead and not started: the row's ``attempts`` is still ``attempts - 1`` (the
    #: attempt is counted by ``JobQueue.start``) and its ``heartbeat_at`` NULL
    ahead: bool = False


#: called by the reaper, in its transaction, for a job it ends ``dead`` (a lost worker out of
#: attempts): the executor hands it to the task's ``on_failure``
OnDead = Callable[[Session, ClaimedJob, str], None]
#: where ``Session.info`` keeps the placements read in the session's current transaction
_PLACEMENTS = "lorebase.jobs.placements"


@dataclass(frozen=True, slots=True)
class Placement:
    """What a job takes from its workspace and pipeline when it is queued: the workspace's tier
    (``priority``, added to the task's; ``pool``, the workers that may take it) and the
    pipeline's scheduled start (``not_before``: none of its jobs runs earlier)."""

    priority: int = 0
    pool: str | None = None
    not_before: datetime | None = None


#: a transaction a job's transitions are written in: an ORM session (a handler's, a hook's) or a
#: Core connection (``Database.connection``: the executor's own steps, without ORM bookkeeping)
Tx = Session | Connection


class JobQueue:
    def __init__(self, db: Database, cfg: JobSettings) -> None:
        self.db = db
        self.cfg = cfg
        self._listeners: list[Any] = []
        self._sql = Statements(cfg)
        #: a share per pipeline or workspace is set: claims on PostgreSQL take turns (``claim_many``)
        self._shares = cfg.max_running_per_pipeline > 0 or cfg.max_running_per_workspace > 0

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
            session,
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

    def job_row(self, session: Session, *, type: str, workspace_id: str, **kw: Any) -> dict[str, Any]:
        """A complete row for bulk inserts (``session.execute(insert(Job), rows)``), placed by its
        workspace and pipeline (:meth:`placement`): the one place a job gets its tier and its
        earliest start."""
        now = utcnow()
        place = self.placement(session, workspace_id, kw.get("pipeline_id"))
        run_at = kw.get("run_at") or now
        if place.not_before is not None and place.not_before > run_at:
            run_at = place.not_before
        return {
            "id": new_id(),
            "type": type,
            "workspace_id": workspace_id,
            "payload": kw.get("payload") or {},
            "pipeline_id": kw.get("pipeline_id"),
            "kb_id": kw.get("kb_id"),
            "document_id": kw.get("document_id"),
            "priority": (kw.get("priority") or 0) + place.priority,
            "pool": place.pool,
            "dedupe_key": kw.get("dedupe_key"),
            "concurrency_key": kw.get("concurrency_key"),
            "status": "pending",
            "attempts": 0,
            "max_attempts": kw.get("max_attempts") or self.cfg.max_attempts,
            "run_at": run_at,
            "checkpoint": {},
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    def placement(session: Session, workspace_id: str, pipeline_id: str | None = None) -> Placement:
        """The workspace's tier and the pipeline's ``not_before``, read in the caller's transaction
        (once per transaction: a bulk insert of a thousand rows reads them once).

        Read, not cached across transactions: a tier changed by ``PATCH /api/v1/workspace``
        applies to the next job queued. On PostgreSQL the workspace row is read ``FOR SHARE``:
        a tier change (``services/workspaces.py``) waits for this transaction, then moves its
        pending jobs, this one among them. A workspace with no row (``system``: periodic jobs)
        has the default tier."""
        tx = session.get_transaction()
        memo: tuple[Any, dict[tuple[str, str | None], Placement]] | None = session.info.get(_PLACEMENTS)
        if memo is None or memo[0] is not tx:
            memo = session.info[_PLACEMENTS] = (tx, {})
        key = (workspace_id, pipeline_id)
        found = memo[1].get(key)
        if found is None:
            query = select(Workspace.priority, Workspace.pool).where(Workspace.id == workspace_id)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(read=True)
            tier = session.execute(query).first()
            not_before = None
            if pipeline_id is not None:
                not_before = session.execute(
                    select(Pipeline.not_before).where(Pipeline.id == pipeline_id)
                ).scalar()
            found = memo[1][key] = Placement(
                priority=tier.priority if tier is not None else 0,
                pool=tier.pool if tier is not None else None,
                not_before=not_before,
            )
        return found

    # -- claim ------------------------------------------------------------------------------
    def claim(
        self,
        owner: str,
        types: tuple[str, ...] | None = None,
        *,
        job_id: str | None = None,
        pool: str | None = None,
    ) -> ClaimedJob | None:
        """Take the most urgent runnable job: highest priority, then oldest ``run_at``.

        With ``job_id`` (a broker executor delivering one job) only that job is taken, and only
        when it is runnable now by the same rules; otherwise None.

        Skips jobs of paused/cancelling pipelines, jobs whose ``concurrency_key`` is held by a
        running job (one embedder loop per pipeline, for example), and jobs of a pipeline or a
        workspace already running its share (``jobs.max_running_per_pipeline`` /
        ``jobs.max_running_per_workspace``), so one huge ingestion cannot take every worker.
        The shares are counted across all workers. On PostgreSQL, when a share is set, claims
        take turns on a transaction-scoped advisory lock, so two claims racing cannot each see the
        last free slot; SQLite's claims are serialized by its writer lock.

        ``pool``: a worker of that pool (``lorebase worker --pool NAME``) takes only jobs of that
        pool; a default worker (None) only jobs of no pool.
        """
        jobs = self.claim_many(owner, types, limit=1, job_id=job_id, pool=pool)
        return jobs[0] if jobs else None

    def claim_many(
        self,
        owner: str,
        types: tuple[str, ...] | None = None,
        *,
        limit: int,
        job_id: str | None = None,
        pool: str | None = None,
    ) -> list[ClaimedJob]:
        """Take up to ``limit`` runnable jobs at once, by the rules of ``claim``, most urgent first:
        the first starts now; the others are claimed *ahead*, for the same worker to run next.

        The batch is what claims one after another would take, cut short at the first job they
        would pass over (a second job of one concurrency key, one beyond its pipeline's or
        workspace's share): never two jobs of a key, never beyond a share, never out of claim
        order, and possibly fewer than ``limit``. Each job claimed ahead is leased like a running
        one (the caller renews its lease) but its attempt is not counted until ``start``: a
        worker lost before starting it costs it no attempt, and ``release`` gives it back with
        its count unchanged.

        One statement (``statements.Statements.claim``) on a Core connection, then the first
        start of the jobs' pipelines.
        """
        now = utcnow()
        with self.db.connection() as conn:
            dialect, by_id = conn.dialect.name, job_id is not None
            if dialect == "postgresql" and self._shares:
                # with a share to keep, claims take turns: each one's statement then starts after
                # the previous claim committed and counts its jobs (under READ COMMITTED two claims
                # racing would each see the last free slot). Held to the end of this short
                # transaction; without shares, claims never wait on each other.
                conn.execute(_CLAIM_TURN, {"key": CLAIM_LOCK_KEY})
            stmt = self._sql.claim(
                dialect, typed=bool(types), by_id=by_id, batch=limit > 1, pooled=pool is not None
            )
            params = {
                "now": now,
                "owner": owner,
                "lease_until": now + timedelta(seconds=self.cfg.lease_seconds),
                "limit": limit,
                "types": list(types or ()),
                "job_id": job_id,
                "claim_pool": pool,
            }
            rows = list(conn.execute(stmt, params))
            for pipeline_id in sorted({r.pipeline_id for r in rows if r.pipeline_id}):
                conn.execute(self._sql.pipeline_started, {"pipeline_id": pipeline_id, "now": now})
        # the one that starts now (its heartbeat set) first, then claim order
        rows.sort(key=lambda r: (r.heartbeat_at is None, -r.priority, r.run_at, r.created_at))
        jobs = [_claimed(r, owner) for r in rows]
        for job in jobs[1:]:
            job.ahead = True
            job.attempts += 1  # the attempt it will be: counted in the row by ``start``
        return jobs

    def start(self, job: ClaimedJob) -> bool:
        """Start a job claimed ahead: count its attempt and renew its lease (one fenced write).

        False when it must not run now: its lease was lost (taken over or cancelled; nothing to
        do), or its pipeline was paused or is being cancelled since it was claimed: a claim now
        would pass it over, so it is released (``release``: pending again, no attempt counted).
        A job that was not claimed ahead is started already (True)."""
        if not job.ahead:
            return True
        now = utcnow()
        params = _token(job) | {
            "v_attempts": job.attempts,
            "now": now,
            "lease_until": now + timedelta(seconds=self.cfg.lease_seconds),
        }
        with self.db.connection() as conn:
            if conn.execute(self._sql.start, params).rowcount == 1:
                job.ahead = False
                return True
            with contextlib.suppress(LeaseLost):
                self.release(conn, job)
        return False

    # -- fenced writes ----------------------------------------------------------------------
    def _fenced_write(self, tx: Tx, job: ClaimedJob, values: dict[str, Any]) -> int:
        """Write ``values`` to the job's row if this attempt still owns it; the rows written (0 or 1)."""
        params = {f"v_{k}": v for k, v in values.items()} | _token(job)
        result = tx.execute(self._sql.fenced_update(tuple(sorted(values))), params)
        return int(result.rowcount)  # type: ignore[attr-defined]

    def fence(self, session: Tx, job: ClaimedJob, *, progress: bool = False) -> None:
        """Prove ownership inside the caller's transaction (and renew the lease), or raise LeaseLost.

        Called first in every transaction a job writes in: on SQLite the transaction already holds
        the write lock, on PostgreSQL the row lock taken here holds until commit, so the reaper
        cannot take the lease between this check and the job's writes. With ``progress`` the
        transaction saves progress: if it commits, this attempt no longer counts should it end
        transiently or lose its worker (``jobs/retry.py``).
        """
        now = utcnow()
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=self.cfg.lease_seconds)}
        if not job.ahead:  # a job claimed ahead is leased, not worked on: no heartbeat yet
            values["heartbeat_at"] = now
        if progress:
            values["progressed"] = True
        if self._fenced_write(session, job, values) != 1:
            raise LeaseLost(f"job {job.id} attempt {job.attempts} no longer owned by {job.owner}")

    def heartbeat(self, job: ClaimedJob) -> bool:
        """Renew the lease; False when it was lost (taken over, cancelled or finished elsewhere)."""
        try:
            with self.db.connection() as conn:
                self.fence(conn, job)
            return True
        except LeaseLost:
            return False

    def save_checkpoint(self, session: Tx, job: ClaimedJob, checkpoint: dict[str, Any]) -> None:
        """Save the job's checkpoint in the caller's (fenced) transaction; a changed checkpoint
        is progress."""
        values: dict[str, Any] = {"checkpoint": checkpoint}
        if checkpoint != job.checkpoint:
            values["progressed"] = True
        self._fenced_write(session, job, values)

    @staticmethod
    def _pending_twin(session: Tx, job_id: str) -> str | None:
        """Another *pending* job with this job's dedupe key: it will do the same work.

        A job going back to ``pending`` while such a twin exists is closed as superseded instead
        (at most one pending job per dedupe key, enforced by a partial unique index)."""
        key = session.execute(select(Job.dedupe_key).where(Job.id == job_id)).scalar()
        if key is None:
            return None
        return session.execute(
            select(Job.id).where(Job.dedupe_key == key, Job.status == "pending", Job.id != job_id).limit(1)
        ).scalar()

    def _back_to_pending(self, session: Tx, job: ClaimedJob, **values: Any) -> str:
        twin = self._pending_twin(session, job.id)
        if twin is not None:
            self._finish(
                session, job, status="cancelled", finished_at=utcnow(), last_error=f"superseded by job {twin}"
            )
            return "superseded"
        self._finish(session, job, status="pending", dispatched_at=None, **values)
        return "pending"

    def _finish(self, session: Tx, job: ClaimedJob, **values: Any) -> None:
        now = utcnow()
        values.setdefault("lease_owner", None)
        values.setdefault("lease_expires_at", None)
        values["updated_at"] = now
        if self._fenced_write(session, job, values) != 1:
            raise LeaseLost(f"job {job.id} attempt {job.attempts} no longer owned by {job.owner}")
        if job.concurrency_key is not None:
            # a job waiting for this key was delivered while the key was held and set aside:
            # it is dispatched again now rather than after ``redispatch_seconds``
            session.execute(self._sql.key_released, {"key": job.concurrency_key})

    def succeed(self, session: Tx, job: ClaimedJob) -> None:
        self._finish(session, job, status="succeeded", finished_at=utcnow(), last_error=None, error_kind=None)

    def fail(self, session: Tx, job: ClaimedJob, error: str, *, kind: str = "permanent") -> None:
        self._finish(session, job, status="failed", finished_at=utcnow(), last_error=error, error_kind=kind)

    def retry_later(
        self, session: Tx, job: ClaimedJob, error: str, *, retry_after: float | None = None
    ) -> tuple[str, float]:
        """A transient error ended the attempt: ``pending`` again after a backoff, or ``dead``,
        as ``retry.after_error`` rules. Returns ``("pending" | "superseded" | "dead", delay)``."""
        progressed = session.execute(self._sql.progressed, _token(job)).scalar()
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

    def release(self, session: Tx, job: ClaimedJob) -> None:
        """Give the job back untouched (pause, drain): this attempt does not count."""
        self._back_to_pending(session, job, attempts=job.attempts - 1, run_at=utcnow())

    def cancel_running(self, session: Tx, job: ClaimedJob, reason: str = "cancelled") -> None:
        self._finish(session, job, status="cancelled", finished_at=utcnow(), last_error=reason)

    # -- maintenance ------------------------------------------------------------------------
    def busy(self) -> bool:
        """Whether any job is running now (one indexed look-up)."""
        with self.db.read_session() as s:
            return s.execute(select(Job.id).where(Job.status == "running").limit(1)).first() is not None

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
    def due_for_dispatch(self, limit: int = 500) -> list[tuple[str, str, str | None]]:
        """Mark pending jobs that are runnable now and have no live broker message as dispatched;
        return their ``(id, type, pool)``, most urgent first, for the caller to send (a pooled job
        goes to its pool's queue, ``dispatch.queue_name``). A job whose ``run_at`` (a pipeline's
        ``not_before``, a retry's backoff) is in the future is not sent before then.

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
            select(Job.id, Job.type, Job.pool)
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
            rows = [(str(r.id), str(r.type), r.pool) for r in s.execute(query)]
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


def _token(job: ClaimedJob) -> dict[str, Any]:
    """The parameters of ``statements.FENCE`` for this attempt."""
    return {"f_id": job.id, "f_claims": job.claims, "f_owner": job.owner}


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
