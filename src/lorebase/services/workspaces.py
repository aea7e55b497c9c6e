"""A workspace's tier (priority, worker pool) and retention: ``GET/PATCH /api/v1/workspace`` and
``lorebase workspace show|set``.

The tier is read where every job is queued (``JobQueue.placement``: the workspace's priority is
added to the task's, its pool copied to the job), so a change applies to the next job; it also
moves the workspace's *pending* jobs here, in the same transaction: their priority by the
difference, their pool to the new one (and, for Celery/RQ, they are sent again, to the new
pool's queues). Running jobs finish where they are.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from lorebase.db.models import Job, Workspace
from lorebase.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from lorebase.db.engine import Database

#: a worker pool's name: what ``lorebase worker --pool`` and the broker queue names take
POOL_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
#: the range of a workspace's priority (a job's priority is its task's plus this)
PRIORITY_RANGE = (-100, 100)
#: the per-workspace retention keys (days; absent: the settings' ``retention.*`` default)
RETENTION_KEYS = ("originals_days", "query_logs_days")
#: "leave this as it is" for :func:`update_workspace` (None means "clear")
UNSET: Any = object()


def check_pool(pool: str | None) -> str | None:
    """A valid pool name, or None (the default workers); raises ``InvalidInput`` otherwise."""
    if pool is None:
        return None
    if not POOL_PATTERN.match(pool):
        raise InvalidInput(f"pool must be 1-40 characters of A-Z a-z 0-9 _ . - (got {pool!r})")
    return pool


def check_priority(priority: int) -> int:
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidInput(f"priority must be an integer from {low} to {high} (got {priority!r})")
    return priority


def check_retention(retention: dict[str, Any]) -> dict[str, Any]:
    """Only known keys, each a number of days ≥ 0 or None (None: back to the default)."""
    unknown = sorted(set(retention) - set(RETENTION_KEYS))
    if unknown:
        raise InvalidInput(f"unknown retention keys {unknown}; known: {list(RETENTION_KEYS)}")
    for key, days in retention.items():
        if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or days < 0):
            raise InvalidInput(f"retention.{key} must be a number of days ≥ 0 or null (got {days!r})")
    return retention


def to_dict(ws: Workspace) -> dict[str, Any]:
    retention = ws.retention or {}
    return {
        "id": ws.id,
        "name": ws.name,
        "priority": ws.priority,
        "pool": ws.pool,
        "retention": {key: retention.get(key) for key in RETENTION_KEYS},
    }


def get_workspace(db: Database, workspace_id: str) -> dict[str, Any]:
    with db.read_session() as s:
        ws = s.get(Workspace, workspace_id)
        if ws is None:
            raise NotFound("workspace not found")
        return to_dict(ws)


def find_workspace_id(db: Database, name: str) -> str:
    """The id of the workspace named ``name`` (the CLI's local data dir)."""
    with db.read_session() as s:
        found = s.execute(select(Workspace.id).where(Workspace.name == name)).scalar()
    if found is None:
        raise NotFound(f"no workspace {name!r}")
    return str(found)


def update_workspace(
    db: Database,
    workspace_id: str,
    *,
    priority: Any = UNSET,
    pool: Any = UNSET,
    retention: Any = UNSET,
) -> dict[str, Any]:
    """Change the tier and/or retention (``retention`` is merged key by key; a None value clears
    a key); the workspace's pending jobs follow a tier change (see the module doc)."""
    with db.session() as s:
        # the row lock first: enqueues read the tier FOR SHARE, so none is half-way meanwhile
        ws = s.execute(select(Workspace).where(Workspace.id == workspace_id).with_for_update()).scalar()
        if ws is None:
            raise NotFound("workspace not found")
        old_priority, old_pool = ws.priority, ws.pool
        if priority is not UNSET:
            ws.priority = check_priority(priority)
        if pool is not UNSET:
            ws.pool = check_pool(pool)
        if retention is not UNSET:
            merged = dict(ws.retention or {})
            for key, days in check_retention(dict(retention or {})).items():
                if days is None:
                    merged.pop(key, None)
                else:
                    merged[key] = days
            ws.retention = merged
        s.flush()
        values: dict[str, Any] = {}
        if ws.priority != old_priority:
            values["priority"] = Job.priority + (ws.priority - old_priority)
        if ws.pool != old_pool:
            values |= {"pool": ws.pool, "dispatched_at": None}  # a message on the old pool's queue is void
        if values:
            s.execute(
                update(Job)
                .where(Job.workspace_id == workspace_id, Job.status == "pending")
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        return to_dict(ws)
