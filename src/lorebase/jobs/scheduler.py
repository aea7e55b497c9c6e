"""The scheduler: periodic tasks, exactly once per period across any number of processes.

A periodic task is an ordinary job type whose :class:`~lorebase.jobs.registry.TaskSpec` says how
often it runs (``every``: seconds, from the settings). Every worker process ticks the scheduler
from its maintenance thread (``scheduler.tick_seconds``); a tick looks at each periodic task's
row in ``schedules`` and, when the current period (``floor(now / every)``, numbered from the
epoch) is past the one it last ran for, moves ``last_period`` forward with a compare-and-set and
queues the period's job **in the same transaction**, with the dedupe key
``periodic:<task>:<period>``. Of all the processes that tick in a period, exactly one wins the
compare-and-set, so exactly one job is queued per period; the job itself then runs at least once
like every job (leases, retries, the reaper), so its handler is idempotent.

So the embedded default and the scaled mode share one mechanism and need nothing else: no
Celery beat, no lock service, no leader. Celery beat was considered for the scaled mode and not
taken (``docs/DESIGN.md``): it is a single process that must be run exactly once, keeps its own
schedule state beside the job table, and would give the embedded mode a second mechanism.

A period missed while no worker ran (the deployment was down) is not made up: the next tick
runs the task once for the current period. Periodic jobs belong to no workspace
(``SYSTEM_WORKSPACE``): tenants never see them in their job lists; the dashboard's jobs page
shows the schedules (:func:`schedules`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from lorebase.db.engine import insert_or_skip
from lorebase.db.models import Schedule
from lorebase.jobs.registry import Registry, TaskSpec

if TYPE_CHECKING:
    from lorebase.db.engine import Database
    from lorebase.jobs.queue import JobQueue
    from lorebase.settings import Settings

log = logging.getLogger("lorebase.scheduler")

#: the workspace id of periodic jobs: no tenant's, so no tenant lists them
SYSTEM_WORKSPACE = "system"


def period_of(now: datetime, every: float) -> int:
    """The number of the period ``now`` falls in, for a task that runs every ``every`` seconds."""
    return math.floor(now.timestamp() / every)


def period_start(period: int, every: float) -> datetime:
    return datetime.fromtimestamp(period * every, tz=UTC)


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A periodic task as the dashboard and ``lorebase jobs`` show it."""

    name: str
    summary: str
    every_seconds: float
    last_run_at: datetime | None
    next_run_at: datetime
    last_job_id: str | None


class Scheduler:
    """Ticks the periodic tasks of ``registry`` (see the module doc)."""

    def __init__(self, db: Database, queue: JobQueue, registry: Registry, settings: Settings) -> None:
        self.db = db
        self.queue = queue
        self.settings = settings
        self.tasks: tuple[TaskSpec, ...] = tuple(s for s in registry if s.every is not None)
        self._next_tick = 0.0

    def maybe_tick(self) -> list[str]:
        """Tick if ``scheduler.tick_seconds`` passed since this process's last tick."""
        if not self.settings.scheduler.enabled or time.monotonic() < self._next_tick:
            return []
        self._next_tick = time.monotonic() + self.settings.scheduler.tick_seconds
        return self.tick()

    def tick(self, now: datetime | None = None) -> list[str]:
        """Queue the job of every periodic task whose period came; returns the ids queued here."""
        now = now or datetime.now(UTC)
        queued: list[str] = []
        for spec in self.tasks:
            try:
                job_id = self._tick_one(spec, now)
            except Exception:  # one task's trouble (a lock timeout) never stops the others
                log.exception("scheduler: could not tick %s", spec.name)
                continue
            if job_id is not None:
                queued.append(job_id)
        if queued:
            self.queue.notify()
        return queued

    def _tick_one(self, spec: TaskSpec, now: datetime) -> str | None:
        assert spec.every is not None
        every = float(spec.every(self.settings))
        period = period_of(now, every)
        next_run = period_start(period + 1, every)
        with self.db.session() as s:
            s.execute(
                insert_or_skip(
                    s,
                    Schedule,
                    {"name": spec.name, "period_seconds": every, "last_period": -1, "updated_at": now},
                    index_elements=["name"],
                )
            )
            won = s.execute(
                update(Schedule)
                .where(Schedule.name == spec.name, Schedule.last_period < period)
                .values(last_period=period, last_run_at=now, next_run_at=next_run, period_seconds=every)
                .returning(Schedule.name)
            ).scalar()
            if won is None:
                return None
            job_id = spec.enqueue(
                s,
                self.queue,
                self.settings,
                workspace_id=SYSTEM_WORKSPACE,
                payload={"period": period, "every": every},
                dedupe_key=f"periodic:{spec.name}:{period}",
            )
            s.execute(update(Schedule).where(Schedule.name == spec.name).values(last_job_id=job_id))
        log.info("scheduler: queued %s for period %s", spec.name, period)
        return job_id


def schedules(db: Database, registry: Registry, settings: Settings) -> list[ScheduleView]:
    """Every periodic task with its last run and its next (the next period's start when it never
    ran: the first tick after it queues it)."""
    with db.read_session() as s:
        rows = {r.name: r for r in s.execute(select(Schedule)).scalars()}
    now = datetime.now(UTC)
    views = []
    for spec in _periodic(registry):
        assert spec.every is not None
        every = float(spec.every(settings))
        row = rows.get(spec.name)
        next_run = (
            row.next_run_at
            if row is not None and row.next_run_at is not None and row.period_seconds == every
            else now
        )
        views.append(
            ScheduleView(
                name=spec.name,
                summary=spec.summary,
                every_seconds=every,
                last_run_at=row.last_run_at if row is not None else None,
                next_run_at=next_run,
                last_job_id=row.last_job_id if row is not None else None,
            )
        )
    return views


def _periodic(registry: Registry) -> Iterable[TaskSpec]:
    return (s for s in registry if s.every is not None)
