"""KB config versions: change a live KB's chunking, embedding or store safely (DESIGN.md §7).

A change that touches the index makes version N+1. Its ``reindex`` pipeline builds N+1's chunks
and vectors beside N's (``pipeline/reindex.py``), while every search is answered by N alone: a
search reads the KB row, whose ``version`` and ``config`` name the live version, and queries that
version's index only (``services/search.py``). When N+1 is whole, the transaction that ends its
pipeline marks it ``complete`` and, as its ``activate`` policy says, makes it live: the KB row's
``version`` and ``config`` change in that one transaction, so a search sees N or N+1, never a
mix, never nothing. ``if_better`` first runs an evaluation of N and N+1 in the same pipeline
and activates only when N+1's nDCG@10 is not below N's. A build that fails or is cancelled
leaves N live and N+1 ``failed``/``cancelled``, its chunks and vectors deleted.

Activating a complete or retired version (``POST …/versions/{n}/activate``) is the same swap,
forwards or back. Retired versions are kept for rollback up to ``retention.kb_versions`` (the
newest); older ones are deleted with their chunks and vectors. Ingestion keeps the live,
building and complete versions current; a retired one is not, so a rollback to a retired
version that misses documents added or changed since it retired is refused with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from lorebase.db.models import (
    Chunk,
    Document,
    Evaluation,
    KbVersion,
    KnowledgeBase,
    Pipeline,
    utcnow,
)
from lorebase.db.states import VersionStatus
from lorebase.errors import Conflict, InvalidInput, NotFound
from lorebase.pipeline.documents import new_pipeline
from lorebase.pipeline.progress import REINDEX
from lorebase.pipeline.progress import to_dict as pipeline_to_dict
from lorebase.pipeline.reindex import missing_documents
from lorebase.pipeline.versions import live_row
from lorebase.services import evaluations, kbs, reindex
from lorebase.services.auth import Principal
from lorebase.services.config import deep_merge, parse_config
from lorebase.services.drafts import check_config, with_dimensions
from lorebase.tasks import reindex_version

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

#: the parts of a config whose change needs a new index (a new version)
INDEX_PARTS = ("chunking", "embedding", "store")
ACTIVATE_POLICIES = ("always", "if_better", "manual")


# -- reading -------------------------------------------------------------------------------------


def _rows(s: Session, kb_id: str) -> list[KbVersion]:
    return list(
        s.execute(select(KbVersion).where(KbVersion.kb_id == kb_id).order_by(KbVersion.version)).scalars()
    )


def to_dict(s: Session, row: KbVersion) -> dict[str, Any]:
    by_state = dict(
        s.execute(
            select(Chunk.embedded, func.count())
            .where(Chunk.kb_id == row.kb_id, Chunk.version == row.version)
            .group_by(Chunk.embedded)
        ).all()
    )
    documents = s.execute(
        select(func.count(func.distinct(Chunk.document_id))).where(
            Chunk.kb_id == row.kb_id, Chunk.version == row.version
        )
    ).scalar_one()
    out: dict[str, Any] = {
        "version": row.version,
        "config": row.config,
        "status": row.status,
        "activate": row.activate,
        "counts": {
            "documents": documents,
            "chunks": by_state.get(True, 0),
            "chunks_pending": by_state.get(False, 0),
            "documents_failed": len(row.failed_documents or []),
        },
        "failed_documents": (row.failed_documents or [])[:20],
        "pipeline_id": row.pipeline_id,
        "pipeline": None,
        "message": row.message,
        "evaluation_id": row.evaluation_id,
        "evaluation": None,
        "created_at": row.created_at,
        "completed_at": row.completed_at,
        "activated_at": row.activated_at,
        "retired_at": row.retired_at,
    }
    if row.pipeline_id:
        p = s.get(Pipeline, row.pipeline_id)
        if p is not None:
            out["pipeline"] = {k: v for k, v in pipeline_to_dict(p).items() if k != "kb_id"}
    if row.evaluation_id:
        ev = s.get(Evaluation, row.evaluation_id)
        if ev is not None:
            out["evaluation"] = {"id": ev.id, "status": ev.status, "results": ev.results, "error": ev.error}
    return out


def list_versions(runtime: Runtime, p: Principal, kb_id: str) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        kb = kbs.load(s, p, kb_id)
        return {"live": kb.version, "items": [to_dict(s, row) for row in _rows(s, kb.id)]}


def get_version(runtime: Runtime, p: Principal, kb_id: str, version: int) -> dict[str, Any]:
    with runtime.db.read_session() as s:
        kb = kbs.load(s, p, kb_id)
        return to_dict(s, _row(s, kb, version))


def _row(s: Session, kb: KnowledgeBase, version: int) -> KbVersion:
    row = s.execute(
        select(KbVersion).where(KbVersion.kb_id == kb.id, KbVersion.version == version)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"knowledge base {kb.id} has no version {version}")
    return row


def _ensure_v1(s: Session, kb: KnowledgeBase) -> None:
    """A KB made before versions, or by hand, gets the row of its live version."""
    if s.execute(select(KbVersion.id).where(KbVersion.kb_id == kb.id).limit(1)).first() is None:
        s.add(live_row(kb))
        s.flush()


# -- changing the config -------------------------------------------------------------------------


def update_kb(
    runtime: Runtime,
    p: Principal,
    kb_id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    config: dict[str, Any] | None = None,
    activate: str = "always",
    evaluation: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """``PATCH /kbs/{id}``: (200, kb) when nothing of the index changes (name, description,
    notifications apply at once); (202, {version, pipeline_id, ...}) when chunking, embedding or
    store change: version N+1 starts building beside the live one."""
    if activate not in ACTIVATE_POLICIES:
        raise InvalidInput(f"activate must be one of {', '.join(ACTIVATE_POLICIES)}")
    with runtime.db.session() as s:
        kb = kbs.load(s, p, kb_id, lock=True)  # one version change at a time, after in-flight saves
        if name is not None:
            kb.name = name
        if description is not None:
            kb.description = description
        current = parse_config(kb.config).model_dump()
        merged = current if config is None else parse_config(deep_merge(current, config)).model_dump()
        merged = _forget_dimensions(current, merged, config)
        if all(merged.get(k) == current.get(k) for k in INDEX_PARTS):
            if merged != current:
                _check(runtime, merged)
                kb.config = merged
                live = s.execute(
                    select(KbVersion).where(KbVersion.kb_id == kb.id, KbVersion.version == kb.version)
                ).scalar_one_or_none()
                if live is not None:
                    live.config = merged
            kb.updated_at = utcnow()
            s.flush()
            return 200, kbs.to_dict(s, kb)
        _check(runtime, merged)
        merged = with_dimensions(runtime, merged)
        if activate == "if_better" and not evaluation:
            raise InvalidInput(
                'activate "if_better" needs an evaluation: {queries, qrels} or {from_feedback: true}'
            )
        _ensure_v1(s, kb)
        rows = _rows(s, kb.id)
        building = [r for r in rows if r.status == VersionStatus.BUILDING]
        if building:
            raise Conflict(
                f"version {building[0].version} of this knowledge base is building "
                f"(pipeline {building[0].pipeline_id}); wait for it or cancel it first",
                details={"version": building[0].version, "pipeline_id": building[0].pipeline_id},
            )
        _check_originals(s, kb)
        version = max([r.version for r in rows] + [kb.version]) + 1
        if merged.get("notifications") != current.get("notifications"):
            kb.config = {**kb.config, "notifications": merged.get("notifications")}
        pipeline = new_pipeline(s, kb, kind=REINDEX)
        pipeline.documents_total = s.execute(
            select(func.count()).select_from(missing_documents(kb.id, version).subquery())
        ).scalar_one()
        pipeline.message = f"Re-indexing for version {version}"
        row = KbVersion(
            kb_id=kb.id,
            workspace_id=kb.workspace_id,
            version=version,
            config=merged,
            status=VersionStatus.BUILDING,
            activate=activate,
            pipeline_id=pipeline.id,
        )
        s.add(row)
        s.flush()
        if evaluation:
            ev = evaluations.new_evaluation(
                s, runtime, kb, evaluation, versions=[kb.version, version], pipeline_id=pipeline.id
            )
            row.evaluation_id = ev.id
        reindex_version.enqueue(
            s, runtime, workspace_id=kb.workspace_id, pipeline_id=pipeline.id, kb_id=kb.id, version=version
        )
        result = {
            "version": version,
            "pipeline_id": pipeline.id,
            "status": VersionStatus.BUILDING.value,
            "activate": activate,
            "evaluation_id": row.evaluation_id,
            "tracking_url": f"/api/v1/pipelines/{pipeline.id}",
        }
    runtime.queue.notify()
    return 202, result


def _check_originals(s: Session, kb: KnowledgeBase) -> None:
    """A re-index rebuilds every document from its original: documents whose original the
    workspace's retention deleted cannot be rebuilt, and the new version would go live without
    them. Refused up front (409) with what to do, rather than a version that silently loses them."""
    gone = s.execute(
        select(Document.id, Document.filename, Document.title, Document.source_url)
        .where(
            Document.kb_id == kb.id, Document.blob_key.is_(None), Document.original_removed_at.is_not(None)
        )
        .order_by(Document.original_removed_at)
    ).all()
    if not gone:
        return
    names = [d.filename or d.title or d.source_url or d.id for d in gone[:5]]
    raise Conflict(
        f"{len(gone)} document(s) of this knowledge base no longer have their original (deleted by "
        f"the workspace's retention policy): a re-index cannot rebuild them and the new version "
        f"would leave them out. Upload them again (or delete them) first: {', '.join(map(repr, names))}"
        + (" …" if len(gone) > 5 else ""),
        details={"documents_without_original": len(gone), "documents": [d.id for d in gone[:100]]},
    )


def _forget_dimensions(
    current: dict[str, Any], merged: dict[str, Any], patch: dict[str, Any] | None
) -> dict[str, Any]:
    """A recorded ``openai:`` dimension belongs to its model and endpoint: a patch changing
    either (without stating a dimension) drops it, to be learnt from the new endpoint."""
    new, old = merged["embedding"], current["embedding"]
    stated = "dimensions" in ((patch or {}).get("embedding") or {})
    moved = (new["model"], new.get("base_url")) != (old["model"], old.get("base_url"))
    if moved and not stated and new.get("dimensions") is not None:
        return {**merged, "embedding": {k: v for k, v in new.items() if k != "dimensions"}}
    return merged


def _check(runtime: Runtime, config: dict[str, Any]) -> None:
    errors, _ = check_config(runtime, config)
    if errors:
        raise InvalidInput("invalid knowledge base config", details=errors)


# -- activation ----------------------------------------------------------------------------------


def activate(runtime: Runtime, p: Principal, kb_id: str, version: int) -> dict[str, Any]:
    """Make a complete or retired version live, in one transaction (forwards, or a rollback)."""
    with runtime.db.session() as s:
        kb = kbs.load(s, p, kb_id, lock=True)  # one version change at a time, after in-flight saves
        _ensure_v1(s, kb)
        row = _row(s, kb, version)
        if row.status == VersionStatus.LIVE:
            return to_dict(s, row)
        if row.status not in (VersionStatus.COMPLETE, VersionStatus.RETIRED):
            raise Conflict(
                f"version {version} is {row.status}: only a complete or retired version can be activated"
            )
        if row.status == VersionStatus.RETIRED:
            behind = _behind(s, kb, row)
            if behind:
                raise Conflict(
                    f"version {version} lacks {behind} document(s) added or changed since it was retired; "
                    "re-index with its config instead (PATCH the knowledge base's config)",
                    details={"version": version, "documents_behind": behind},
                )
        reindex.swap(s, runtime, kb, row)
        s.flush()
        return to_dict(s, row)


def _behind(s: Session, kb: KnowledgeBase, row: KbVersion) -> int:
    """Documents a retired version misses: indexed with no chunks in it, or indexed again since."""
    missing = s.execute(
        select(func.count()).select_from(missing_documents(kb.id, row.version).subquery())
    ).scalar_one()
    changed = 0
    if row.retired_at is not None:
        changed = s.execute(
            select(func.count()).where(
                Document.kb_id == kb.id,
                Document.indexed_at > row.retired_at,
                exists().where(Chunk.document_id == Document.id, Chunk.version == row.version),
            )
        ).scalar_one()
    return int(missing) + int(changed)
