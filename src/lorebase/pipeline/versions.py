"""Which config versions of a KB a stage writes to, and with what config (the version's index
is its chunks with that ``version`` and the store entries under ``index_key(kb, version)``).

Ingestion keeps every *maintained* version current (live, building, complete: ``db/states.py``),
so a document added while version N+1 builds ends up in N and N+1 alike, and a complete version
waiting for activation is whole when it goes live. The lifecycle itself (create, activate,
retire) is ``services/versions.py``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorebase.db.models import KbVersion, KnowledgeBase
from lorebase.db.states import VERSION_MAINTAINED, VersionStatus


def maintained(s: Session, kb: KnowledgeBase) -> dict[int, dict[str, Any]]:
    """version → config of the versions ingestion writes to: the live one first."""
    out: dict[int, dict[str, Any]] = {kb.version: kb.config}
    rows = s.execute(
        select(KbVersion.version, KbVersion.config)
        .where(KbVersion.kb_id == kb.id, KbVersion.status.in_(VERSION_MAINTAINED))
        .order_by(KbVersion.version)
    ).all()
    for version, config in rows:
        out.setdefault(version, config)
    return out


def configs(s: Session, kb: KnowledgeBase, versions: Iterable[int]) -> dict[int, dict[str, Any]]:
    """version → config of the given versions (the live one from the KB row itself); a version
    that no longer exists is absent."""
    wanted = set(versions)
    out: dict[int, dict[str, Any]] = {}
    if kb.version in wanted:
        out[kb.version] = kb.config
    rest = wanted - set(out)
    if rest:
        rows = s.execute(
            select(KbVersion.version, KbVersion.config).where(
                KbVersion.kb_id == kb.id, KbVersion.version.in_(rest)
            )
        ).all()
        out.update({v: c for v, c in rows})
    return out


def live_row(kb: KnowledgeBase) -> KbVersion:
    """The ``kb_versions`` row of the KB's live version, as it is (a new KB's version 1)."""
    return KbVersion(
        kb_id=kb.id,
        workspace_id=kb.workspace_id,
        version=kb.version or 1,
        config=kb.config,
        status=VersionStatus.LIVE,
        activated_at=kb.created_at,
    )
