"""Job inspection for the API and CLI: listing, queue health, retrying dead letters."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from lorebase.db.models import Document, Job, KnowledgeBase, Pipeline, utcnow
from lorebase.db.states import (
    JOB_GAVE_UP,
    PIPELINE_FINAL,
    DocumentStatus,
    JobStatus,
    PipelineStatus,
    transition,
)
from lorebase.errors import Conflict, InvalidInput, NotFound
from lorebase.services.auth import Principal
from lorebase.tasks import REGISTRY

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

JOB_STATUSES = tuple(JobStatus)


def to_dict(j: Job) -> dict[str, Any]:
    return {
        "id": j.id,
        "type": j.type,
        "status": j.status,
        "pipeline_id": j.pipeline_id,
        "kb_id": j.kb_id,
        "document_id": j.document_id,
        "priority": j.priority,
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "run_at": j.run_at,
        "lease_owner": j.lease_owner,
        "lease_expires_at": j.lease_expires_at,
        "heartbeat_at": j.heartbeat_at,
        "last_error": j.last_error,
        "error_kind": j.error_kind,
        "created_at": j.created_at,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
    }


def list_jobs(
    runtime: Runtime, p: Principal, *, status: str | None, kb_id: str | None, limit: int, offset: int
) -> dict[str, Any]:
    if status is not None and status not in JOB_STATUSES:
        raise InvalidInput(f"unknown status {status!r}; one of {', '.join(JOB_STATUSES)}")
    with runtime.db.read_session() as s:
        q = select(Job).where(Job.workspace_id == p.workspace_id)
        if status:
            q = q.where(Job.status == status)
        if kb_id:
            owned = select(KnowledgeBase.id).where(
                KnowledgeBase.id == kb_id, KnowledgeBase.workspace_id == p.workspace_id
            )
            if s.execute(owned).first() is None:  # another workspace's id answers like a missing one
                raise NotFound(f"knowledge base {kb_id} not found")
            q = q.where(Job.kb_id == kb_id)
        total = s.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = (
            s.execute(q.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).scalars().all()
        )
        return {"items": [to_dict(j) for j in rows], "total": total}


def queue_stats(runtime: Runtime, p: Principal) -> dict[str, Any]:
    now = utcnow()
    hour_ago = now - timedelta(hours=1)
    with runtime.db.read_session() as s:
        scoped = Job.workspace_id == p.workspace_id
        by_status = dict(s.execute(select(Job.status, func.count()).where(scoped).group_by(Job.status)).all())
        owners = s.execute(
            select(func.count(func.distinct(Job.lease_owner))).where(
                Job.status == "running", Job.lease_expires_at > now
            )
        ).scalar_one()
        recent = s.execute(
            select(Job.status, Job.started_at, Job.finished_at).where(scoped, Job.finished_at >= hour_ago)
        ).all()
    done = [r for r in recent if r.status == "succeeded"]
    durations = [
        (r.finished_at - r.started_at).total_seconds() for r in done if r.started_at and r.finished_at
    ]
    ended = [r for r in recent if r.status in (JobStatus.SUCCEEDED, *JOB_GAVE_UP)]
    return {
        "pending": by_status.get("pending", 0),
        "running": by_status.get("running", 0),
        "failed": by_status.get("failed", 0),
        "dead": by_status.get("dead", 0),
        "succeeded": by_status.get("succeeded", 0),
        "active_workers": owners,
        "avg_processing_seconds": round(sum(durations) / len(durations), 3) if durations else None,
        "error_rate": round(sum(1 for r in ended if r.status != "succeeded") / len(ended), 4)
        if ended
        else 0.0,
        "throughput_per_hour": len(done),
    }


def retry_job(runtime: Runtime, p: Principal, job_id: str) -> dict[str, Any]:
    """Send a dead (or failed) job back to the queue with a fresh attempt budget."""
    with runtime.db.session() as s:
        job = s.execute(
            select(Job).where(Job.id == job_id, Job.workspace_id == p.workspace_id)
        ).scalar_one_or_none()
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.status not in JOB_GAVE_UP:
            raise Conflict(f"only dead or failed jobs can be retried (this one is {job.status})")
        job.status, job.run_at, job.finished_at = JobStatus.PENDING, utcnow(), None
        spec = REGISTRY.specs.get(job.type)
        budget = spec.retry.max_attempts(runtime.settings) if spec else runtime.settings.jobs.max_attempts
        job.max_attempts = job.attempts + budget
        if job.document_id:
            transition(
                s,
                [Document.id == job.document_id, Document.status == DocumentStatus.FAILED],
                DocumentStatus.PENDING,
            )
        if job.pipeline_id:
            pipe = s.get(Pipeline, job.pipeline_id)
            if pipe is not None and pipe.status in PIPELINE_FINAL and pipe.status != PipelineStatus.CANCELLED:
                pipe.status, pipe.finished_at = PipelineStatus.RUNNING, None
            if job.kb_id:
                kb = s.get(KnowledgeBase, job.kb_id)
                if kb is not None and kb.status == "failed":
                    kb.status = "processing"
        result = to_dict(job)
    runtime.queue.notify()
    return result
