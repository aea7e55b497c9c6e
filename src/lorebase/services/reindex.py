"""The end of a KB version's re-index and the swap (``services/versions.py`` has the whole
story): what settling asks when a ``reindex`` pipeline's jobs have all ended (:func:`more_work`,
then :func:`end`, in its transaction), and the one transaction that makes a version live
(:func:`swap`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from lorebase.db.models import Chunk, Evaluation, Job, KbVersion, KnowledgeBase, Pipeline, index_key, utcnow
from lorebase.db.states import JOB_GAVE_UP, PipelineStatus, VersionStatus
from lorebase.pipeline.reindex import missing_documents
from lorebase.tasks import embed_chunks, evaluate, reindex_version

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

#: repair rounds a re-index may need (as settling's ``MAX_REPAIRS`` for documents)
MAX_REPAIRS = 10


def swap(s: Session, runtime: Runtime, kb: KnowledgeBase, row: KbVersion) -> None:
    """``row`` goes live and the live version retires, in the caller's transaction; retired
    versions beyond ``retention.kb_versions`` are deleted with their index."""
    now = utcnow()
    for old in s.execute(
        select(KbVersion).where(KbVersion.kb_id == kb.id, KbVersion.status == VersionStatus.LIVE)
    ).scalars():
        old.status, old.retired_at = VersionStatus.RETIRED, now
    notifications = (kb.config or {}).get("notifications")
    config = dict(row.config)
    if notifications:  # not part of a version: the KB's own, kept across swaps
        config["notifications"] = notifications
    else:
        config.pop("notifications", None)
    row.status, row.activated_at, row.retired_at = VersionStatus.LIVE, now, None
    kb.version, kb.config, kb.updated_at = row.version, config, now
    s.flush()
    retired = list(
        s.execute(
            select(KbVersion)
            .where(KbVersion.kb_id == kb.id, KbVersion.status == VersionStatus.RETIRED)
            .order_by(KbVersion.retired_at.desc(), KbVersion.version.desc())
        ).scalars()
    )
    for old in retired[runtime.settings.retention.kb_versions :]:
        drop_index(s, runtime, kb, old)
        s.delete(old)


def drop_index(s: Session, runtime: Runtime, kb: KnowledgeBase, row: KbVersion) -> None:
    """Delete a version's chunks and store entries (the version row stays)."""
    runtime.kb_store(row.config).delete_kb(s, index_key(kb.id, row.version))
    s.execute(delete(Chunk).where(Chunk.kb_id == kb.id, Chunk.version == row.version))


def _by_pipeline(s: Session, pipeline_id: str) -> KbVersion | None:
    return s.execute(select(KbVersion).where(KbVersion.pipeline_id == pipeline_id)).scalar_one_or_none()


def _gave_up(s: Session, pipeline_id: str) -> Any:
    return s.execute(
        select(Job.type, Job.last_error)
        .where(Job.pipeline_id == pipeline_id, Job.status.in_(JOB_GAVE_UP))
        .order_by(Job.finished_at.desc())
        .limit(1)
    ).first()


def more_work(s: Session, runtime: Runtime, p: Pipeline) -> bool:
    """A re-index whose jobs have all ended: queue what is left (documents still without chunks
    in the version, chunks not embedded, or the ``if_better`` evaluation) and return True; or
    mark the version complete and return False (its pipeline ends: :func:`end`)."""
    row = _by_pipeline(s, p.id)
    if row is None:
        return False
    if row.status == VersionStatus.BUILDING:
        if _gave_up(s, p.id) is not None:
            return False
        skip = [d["id"] for d in row.failed_documents or []]
        missing = s.execute(select(missing_documents(row.kb_id, row.version, skip).exists())).scalar()
        pending = s.execute(
            select(
                exists().where(
                    Chunk.kb_id == row.kb_id, Chunk.version == row.version, Chunk.embedded.is_(False)
                )
            )
        ).scalar()
        if missing or pending:
            if p.repairs >= MAX_REPAIRS:
                return False
            p.repairs = (p.repairs or 0) + 1
            reindex_version.enqueue(
                s,
                runtime,
                workspace_id=row.workspace_id,
                pipeline_id=p.id,
                kb_id=row.kb_id,
                version=row.version,
            )
            if pending:
                embed_chunks.enqueue(
                    s,
                    runtime,
                    workspace_id=row.workspace_id,
                    pipeline_id=p.id,
                    kb_id=row.kb_id,
                    version=row.version,
                )
            return True
        row.status, row.completed_at = VersionStatus.COMPLETE, utcnow()
    if row.status == VersionStatus.COMPLETE and row.evaluation_id:  # any policy: its figures show
        ev = s.get(Evaluation, row.evaluation_id)
        if ev is not None and ev.status == "queued":  # it runs in this pipeline, which waits for it
            evaluate.enqueue(s, runtime, ev)
            return True
    return False


def end(s: Session, runtime: Runtime, p: Pipeline) -> None:
    """Give a re-index pipeline its final state and its version what follows from it."""
    row = _by_pipeline(s, p.id)
    kb = s.get(KnowledgeBase, p.kb_id)
    if row is None or kb is None:
        p.status, p.error = PipelineStatus.FAILED, "the version was deleted"
        return
    if p.status == PipelineStatus.CANCELLING:
        p.status = PipelineStatus.CANCELLED
        if row.status in (VersionStatus.BUILDING, VersionStatus.COMPLETE):
            row.status, row.message = VersionStatus.CANCELLED, "cancelled by request"
            drop_index(s, runtime, kb, row)
        p.message = f"cancelled: version {row.version} was not activated; version {kb.version} stays live"
        return
    if row.status == VersionStatus.BUILDING:
        gave_up = _gave_up(s, p.id)
        reason = (
            f"{gave_up.type} failed: {gave_up.last_error}"
            if gave_up is not None
            else f"the build stopped before it finished (queued again {MAX_REPAIRS} times)"
        )
        row.status, row.message = VersionStatus.FAILED, reason
        drop_index(s, runtime, kb, row)
        p.status, p.error = PipelineStatus.FAILED, reason
        p.message = f"failed: version {row.version} was not built ({reason}); version {kb.version} stays live"
        return
    p.status = PipelineStatus.COMPLETED
    built = f"version {row.version} built"
    if row.status != VersionStatus.COMPLETE:  # activated by hand meanwhile, or retired
        p.message = f"{built}; it is {row.status}"
        return
    if row.activate == "always":
        swap(s, runtime, kb, row)
        p.message = f"{built} and live"
    elif row.activate == "manual":
        p.message = f"{built}; activate it when ready (version {kb.version} stays live){_figures(s, kb, row)}"
    else:
        p.message = _if_better(s, runtime, kb, row, built)
    row.message = p.message


def ndcg_of(evaluation: Evaluation, version: int, mode: str = "hybrid") -> float | None:
    """nDCG@10 of ``version`` in ``mode``, or None when the evaluation has no such figure (yet).
    (Here, below ``services/evaluations.py``, which re-exports it: settling decides with it.)"""
    figure = ((evaluation.results or {}).get(str(version)) or {}).get(mode, {}).get("ndcg@10")
    return float(figure) if figure is not None else None


def _figures(s: Session, kb: KnowledgeBase, row: KbVersion) -> str:
    """``"; nDCG@10 0.7 against 0.6 for version 1"`` when the version was evaluated, else ``""``."""
    ev = s.get(Evaluation, row.evaluation_id) if row.evaluation_id else None
    new, old = (ndcg_of(ev, row.version), ndcg_of(ev, kb.version)) if ev is not None else (None, None)
    return (
        ""
        if new is None or old is None
        else f"; nDCG@10 {new:.4f} against {old:.4f} for version {kb.version}"
    )


def _if_better(s: Session, runtime: Runtime, kb: KnowledgeBase, row: KbVersion, built: str) -> str:
    ev = s.get(Evaluation, row.evaluation_id) if row.evaluation_id else None
    if ev is None or ev.status != "completed":
        why = ev.error if ev is not None and ev.error else "the evaluation did not complete"
        return f"{built}; not activated: {why} (version {kb.version} stays live)"
    new, old = ndcg_of(ev, row.version), ndcg_of(ev, kb.version)
    if new is None or old is None:
        return f"{built}; not activated: the evaluation has no hybrid nDCG@10 for both versions"
    if new >= old:
        live = kb.version
        swap(s, runtime, kb, row)
        return f"{built} and live: nDCG@10 {new:.4f} against {old:.4f} for version {live}"
    return f"{built}; not activated: nDCG@10 {new:.4f} is below version {kb.version}'s {old:.4f}"
