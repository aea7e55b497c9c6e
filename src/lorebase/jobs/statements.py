"""The job table's per-job statements, built once per queue and run with bound parameters.

Building a SQLAlchemy statement costs far more CPU than the database takes to run it (operator
overloading, coercions, a cache key per statement), and so does an ORM ``Session`` per step;
SQLite itself spends ~0.1 ms on each of these statements. The claim, the fenced writes and the
heartbeat run for every job, so ``JobQueue`` builds them here, once per shape, and executes
them on a Core connection (``Database.connection``) or in the caller's transaction with their
parameters: SQLAlchemy's compiled cache finds a statement it has seen, and nothing is built
per job (``benchmarks/README.md``, ``queue.py``).

What the statements mean is documented where they are used (``jobs/queue.py``); this module
holds their SQL, one copy each.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    Integer,
    Select,
    String,
    Table,
    Update,
    and_,
    bindparam,
    case,
    func,
    literal,
    null,
    or_,
    select,
    update,
)

from lorebase.db.models import Job, Pipeline
from lorebase.db.states import PIPELINE_HELD
from lorebase.settings import JobSettings

JOBS = cast(Table, Job.__table__)
PIPELINES = cast(Table, Pipeline.__table__)
#: the job table again, for counting the running jobs of a pipeline or workspace in a claim
RUNNING = JOBS.alias("running")

#: the columns a claim returns: what ``ClaimedJob`` holds
CLAIMED = (
    JOBS.c.id,
    JOBS.c.type,
    JOBS.c.payload,
    JOBS.c.attempts,
    JOBS.c.max_attempts,
    JOBS.c.workspace_id,
    JOBS.c.pipeline_id,
    JOBS.c.kb_id,
    JOBS.c.document_id,
    JOBS.c.checkpoint,
    JOBS.c.priority,
    JOBS.c.concurrency_key,
    JOBS.c.claims,
    JOBS.c.run_at,
    JOBS.c.created_at,
    JOBS.c.heartbeat_at,
)

_NOW = bindparam("now", type_=JOBS.c.run_at.type)
#: the fencing token of an attempt: parameters ``f_id``, ``f_claims``, ``f_owner``
FENCE = and_(
    JOBS.c.id == bindparam("f_id", type_=String),
    JOBS.c.claims == bindparam("f_claims", type_=Integer),
    JOBS.c.lease_owner == bindparam("f_owner", type_=String),
    JOBS.c.status == "running",
)


class Statements:
    """A ``JobQueue``'s statements; the shares come from its settings, fixed for its life."""

    def __init__(self, cfg: JobSettings) -> None:
        self.cfg = cfg
        self._claims: dict[tuple[str, bool, bool, bool, bool], Update] = {}
        self._fenced: dict[tuple[str, ...], Update] = {}
        #: the pipeline of a claimed job starts (``pipeline_id``, ``now``), if it was queued
        self.pipeline_started = (
            update(PIPELINES)
            .where(PIPELINES.c.id == bindparam("pipeline_id", type_=String), PIPELINES.c.status == "queued")
            .values(status="running", started_at=_NOW, updated_at=_NOW)
        )
        #: jobs waiting for a concurrency key (``key``) that was just released: send them again
        self.key_released = (
            update(JOBS)
            .where(JOBS.c.concurrency_key == bindparam("key", type_=String), JOBS.c.status == "pending")
            .values(dispatched_at=None)
        )
        #: whether the attempt (``FENCE``) saved progress
        self.progressed = select(JOBS.c.progressed).where(FENCE)
        #: a job claimed ahead starts (``FENCE``, ``v_attempts``, ``now``, ``lease_until``), unless
        #: its pipeline is held meanwhile
        self.start = (
            update(JOBS)
            .where(FENCE, or_(JOBS.c.pipeline_id.is_(None), JOBS.c.pipeline_id.not_in(_held())))
            .values(
                attempts=bindparam("v_attempts", type_=Integer),
                heartbeat_at=_NOW,
                lease_expires_at=bindparam("lease_until", type_=JOBS.c.lease_expires_at.type),
            )
        )

    def claim(self, dialect: str, *, typed: bool, by_id: bool, batch: bool, pooled: bool = False) -> Update:
        """Claim the most urgent runnable job, or with ``batch`` up to ``:limit`` of them, in one
        statement (see ``JobQueue.claim_many``): ``WITH picked AS MATERIALIZED (…) UPDATE jobs …
        FROM picked RETURNING CLAIMED``. The job at ``pos`` 1 starts: its attempt is counted and
        its heartbeat set; the others, claimed ahead, keep their ``attempts`` and a NULL
        ``heartbeat_at`` until they start (``JobQueue.start``).

        Parameters: ``now``, ``owner``, ``lease_until``, ``types`` (a list) when ``typed``,
        ``job_id`` when ``by_id``, ``limit`` with ``batch`` (``batch_of``), ``claim_pool`` when
        ``pooled`` (a ``--pool`` worker takes only that pool's jobs; otherwise only jobs of no
        pool). The pool is a residual predicate on the ``ix_jobs_claim`` walk (status, priority,
        run_at): pooled jobs are few, and a default worker passes over them as it passes over a
        held pipeline's."""
        key = (dialect, typed, by_id, batch, pooled)
        stmt = self._claims.get(key)
        if stmt is None:
            runnable = self.runnable()
            if typed:
                runnable = runnable.where(JOBS.c.type.in_(bindparam("types", expanding=True)))
            if by_id:
                runnable = runnable.where(JOBS.c.id == bindparam("job_id", type_=String))
            if pooled:
                runnable = runnable.where(JOBS.c.pool == bindparam("claim_pool", type_=String))
            else:
                runnable = runnable.where(JOBS.c.pool.is_(None))
            lock = dialect == "postgresql"  # FOR UPDATE SKIP LOCKED: racing claims split the jobs
            if batch:
                picked = self.batch_of(runnable, lock=lock)
            else:
                picked = runnable.add_columns(literal(1).label("pos")).limit(1)
                picked = picked.with_for_update(skip_locked=True) if lock else picked
            stmt = self._claims[key] = self._claim_picked(picked)
        return stmt

    def batch_of(self, runnable: Select[Any], *, lock: bool) -> Select[Any]:
        """What claims one after another would take of the first ``:limit`` runnable jobs in claim
        order (an index walk that stops there), numbered in that order (``pos``): the jobs up to
        the first that one of them would hold back (a second job of one concurrency key, one
        beyond its pipeline's or workspace's share, counting the running jobs and those before
        it). As every job before it is taken, its window counts are exact; from the first job
        held back on, the batch stops, so it is never out of claim order."""
        head = runnable.add_columns(
            JOBS.c.priority,
            JOBS.c.run_at,
            JOBS.c.created_at,
            JOBS.c.concurrency_key,
            JOBS.c.pipeline_id,
            JOBS.c.workspace_id,
        ).limit(bindparam("limit", type_=Integer))
        due = (head.with_for_update(skip_locked=True) if lock else head).subquery("due")
        order = (due.c.priority.desc(), due.c.run_at, due.c.created_at)
        key_rank = func.row_number().over(
            partition_by=func.coalesce(due.c.concurrency_key, due.c.id), order_by=order
        )
        held_back = [key_rank > 1]
        for share, column in (
            (self.cfg.max_running_per_pipeline, "pipeline_id"),
            (self.cfg.max_running_per_workspace, "workspace_id"),
        ):
            if share:
                running = (
                    select(func.count())
                    .select_from(RUNNING)
                    .where(RUNNING.c.status == "running", RUNNING.c[column] == due.c[column])
                    .scalar_subquery()
                )
                taken = func.row_number().over(partition_by=due.c[column], order_by=order) + running
                held_back.append(and_(due.c[column].is_not(None), taken > share))
        checked = select(
            due.c.id,
            due.c.priority,
            due.c.run_at,
            due.c.created_at,
            case((or_(*held_back), 1), else_=0).label("held_back"),
        ).subquery("checked")
        in_order = (checked.c.priority.desc(), checked.c.run_at, checked.c.created_at)
        counted = select(
            checked.c.id,
            func.row_number().over(order_by=in_order).label("pos"),
            func.sum(checked.c.held_back).over(order_by=in_order, rows=(None, 0)).label("held_so_far"),
        ).subquery("counted")
        return select(counted.c.id, counted.c.pos).where(counted.c.held_so_far == 0)

    def _claim_picked(self, picked: Select[Any]) -> Update:
        # a CTE, MATERIALIZED: PostgreSQL plans ``id IN (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED)``
        # as a semi join that runs the subquery again for every pending row, and each run skips
        # the rows this statement already locked, so it took every pending job
        cte = picked.cte("picked").prefix_with("MATERIALIZED")
        starts = cte.c.pos == 1
        return (
            update(JOBS)
            .where(JOBS.c.id == cte.c.id, JOBS.c.status == "pending")
            .values(
                status="running",
                attempts=JOBS.c.attempts + case((starts, 1), else_=0),
                claims=JOBS.c.claims + 1,
                progressed=False,
                lease_owner=bindparam("owner", type_=String),
                lease_expires_at=bindparam("lease_until", type_=JOBS.c.lease_expires_at.type),
                heartbeat_at=case((starts, _NOW), else_=null()),
                started_at=func.coalesce(JOBS.c.started_at, _NOW),
                updated_at=_NOW,
            )
            .returning(*CLAIMED)
        )

    def runnable(self) -> Select[Any]:
        """The ids of the jobs a claim may take now (``now``), most urgent first: pending and
        due, not of a held pipeline, not of a concurrency key a running job holds, not of a
        pipeline or workspace running its share."""
        busy = select(JOBS.c.concurrency_key).where(
            JOBS.c.status == "running", JOBS.c.concurrency_key.is_not(None)
        )
        query = (
            select(JOBS.c.id)
            .where(
                JOBS.c.status == "pending",
                JOBS.c.run_at <= _NOW,
                or_(JOBS.c.pipeline_id.is_(None), JOBS.c.pipeline_id.not_in(_held())),
                or_(JOBS.c.concurrency_key.is_(None), JOBS.c.concurrency_key.not_in(busy)),
            )
            .order_by(JOBS.c.priority.desc(), JOBS.c.run_at, JOBS.c.created_at)
        )
        if self.cfg.max_running_per_pipeline:
            full = (
                select(JOBS.c.pipeline_id)
                .where(JOBS.c.status == "running", JOBS.c.pipeline_id.is_not(None))
                .group_by(JOBS.c.pipeline_id)
                .having(func.count() >= self.cfg.max_running_per_pipeline)
            )
            query = query.where(or_(JOBS.c.pipeline_id.is_(None), JOBS.c.pipeline_id.not_in(full)))
        if self.cfg.max_running_per_workspace:
            crowded = (
                select(JOBS.c.workspace_id)
                .where(JOBS.c.status == "running")
                .group_by(JOBS.c.workspace_id)
                .having(func.count() >= self.cfg.max_running_per_workspace)
            )
            query = query.where(JOBS.c.workspace_id.not_in(crowded))
        return query

    def fenced_update(self, columns: tuple[str, ...]) -> Update:
        """``UPDATE jobs SET <column> = :v_<column>, … WHERE FENCE``."""
        stmt = self._fenced.get(columns)
        if stmt is None:
            values = {c: bindparam(f"v_{c}", type_=JOBS.c[c].type) for c in columns}
            stmt = self._fenced[columns] = update(JOBS).where(FENCE).values(values)
        return stmt


def _held() -> Select[Any]:
    """The pipelines whose jobs wait (paused, cancelling, cancelled)."""
    return select(PIPELINES.c.id).where(PIPELINES.c.status.in_(PIPELINE_HELD))
