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

from sqlalchemy import Integer, Select, String, Table, Update, and_, bindparam, func, or_, select, update

from lorebase.db.models import Job, Pipeline
from lorebase.db.states import PIPELINE_HELD
from lorebase.settings import JobSettings

JOBS = cast(Table, Job.__table__)
PIPELINES = cast(Table, Pipeline.__table__)

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
        self._claims: dict[tuple[str, bool, bool], Update] = {}
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

    def claim(self, dialect: str, *, typed: bool, by_id: bool) -> Update:
        """``UPDATE jobs … WHERE id IN (the runnable jobs, most urgent first, LIMIT :limit)
        RETURNING CLAIMED``. Parameters: ``now``, ``owner``, ``lease_until``, ``limit``, and
        ``types`` (a list) when ``typed``, ``job_id`` when ``by_id``."""
        key = (dialect, typed, by_id)
        stmt = self._claims.get(key)
        if stmt is None:
            stmt = self._claims[key] = self._build_claim(dialect, typed=typed, by_id=by_id)
        return stmt

    def _build_claim(self, dialect: str, *, typed: bool, by_id: bool) -> Update:
        candidate = self.runnable()
        if typed:
            candidate = candidate.where(JOBS.c.type.in_(bindparam("types", expanding=True)))
        if by_id:
            candidate = candidate.where(JOBS.c.id == bindparam("job_id", type_=String))
        candidate = candidate.limit(bindparam("limit", type_=Integer))
        if dialect == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        # a CTE, MATERIALIZED: PostgreSQL plans ``id IN (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED)``
        # as a semi join that runs the subquery again for every pending row, and each run skips
        # the rows this statement already locked, so it took every pending job
        picked = candidate.cte("picked").prefix_with("MATERIALIZED")
        return (
            update(JOBS)
            .where(JOBS.c.id == picked.c.id, JOBS.c.status == "pending")
            .values(
                status="running",
                attempts=JOBS.c.attempts + 1,
                claims=JOBS.c.claims + 1,
                progressed=False,
                lease_owner=bindparam("owner", type_=String),
                lease_expires_at=bindparam("lease_until", type_=JOBS.c.lease_expires_at.type),
                heartbeat_at=_NOW,
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
        held = select(PIPELINES.c.id).where(PIPELINES.c.status.in_(PIPELINE_HELD))
        query = (
            select(JOBS.c.id)
            .where(
                JOBS.c.status == "pending",
                JOBS.c.run_at <= _NOW,
                or_(JOBS.c.pipeline_id.is_(None), JOBS.c.pipeline_id.not_in(held)),
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
