"""Drafts in the SQL ``drafts`` table (embedded mode): expiry is a column, swept by ``purge_expired``.

Writes lock the row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite write transactions are
already serialised), so concurrent changes of one draft queue instead of overwriting each other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lorebase.adapters.drafts.protocol import DraftRecord, source_blob_keys
from lorebase.db.engine import Database
from lorebase.db.models import Draft, utcnow
from lorebase.errors import NotFound


def _record(row: Draft, *, copy_json: bool = False) -> DraftRecord:
    """The row as a record. ``copy_json`` when the row stays in use after the record is changed
    (``update``): the JSON columns have no mutation tracking, so a record that changed the row's
    own lists in place would leave nothing for the flush to see. Elsewhere the row is discarded
    and the record may keep its freshly decoded values (a deep copy of a 100-source draft cost
    a finalize ~3 ms, twice)."""
    config, sources = (
        (copy.deepcopy(row.config), copy.deepcopy(row.sources)) if copy_json else (row.config, row.sources)
    )
    return DraftRecord(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        description=row.description,
        config=config,
        sources=sources,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
    )


class SqlDraftRepository:
    def __init__(self, db: Database, *, ttl_seconds: float) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_seconds)

    def _load(self, s: Session, workspace_id: str, draft_id: str, *, lock: bool) -> Draft:
        query = select(Draft).where(Draft.id == draft_id, Draft.workspace_id == workspace_id)
        if lock:
            query = query.with_for_update()
        row = s.execute(query).scalar_one_or_none()
        if row is None or row.expires_at <= utcnow():
            raise NotFound(f"draft {draft_id} not found (or expired)")
        return row

    def create(self, draft: DraftRecord) -> DraftRecord:
        now = utcnow()
        draft.updated_at, draft.expires_at = now, now + self.ttl
        with self.db.session() as s:
            s.add(
                Draft(
                    id=draft.id,
                    workspace_id=draft.workspace_id,
                    name=draft.name,
                    description=draft.description,
                    config=draft.config,
                    sources=draft.sources,
                    created_at=draft.created_at,
                    updated_at=draft.updated_at,
                    expires_at=draft.expires_at,
                )
            )
        return draft

    def get(self, workspace_id: str, draft_id: str) -> DraftRecord:
        with self.db.read_session() as s:
            return _record(self._load(s, workspace_id, draft_id, lock=False))

    def update(self, workspace_id: str, draft_id: str, change: Callable[[DraftRecord], None]) -> DraftRecord:
        with self.db.session() as s:
            row = self._load(s, workspace_id, draft_id, lock=True)
            draft = _record(row, copy_json=True)
            change(draft)
            now = utcnow()
            draft.updated_at, draft.expires_at = now, now + self.ttl
            row.name, row.description, row.config = draft.name, draft.description, draft.config
            row.sources, row.updated_at, row.expires_at = draft.sources, draft.updated_at, draft.expires_at
        return draft

    def delete(self, workspace_id: str, draft_id: str) -> None:
        with self.db.session() as s:
            s.delete(self._load(s, workspace_id, draft_id, lock=True))

    def take(self, workspace_id: str, draft_id: str, session: Session) -> DraftRecord:
        draft = _record(self._load(session, workspace_id, draft_id, lock=True))
        gone = session.execute(delete(Draft).where(Draft.id == draft_id, Draft.workspace_id == workspace_id))
        if gone.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent finalize took it first
            raise NotFound(f"draft {draft_id} not found (or expired)")
        return draft

    def put_back(self, draft: DraftRecord) -> None:
        """Nothing to do: ``take`` deleted inside the caller's transaction, which rolled back."""

    def purge_expired(self) -> int:
        with self.db.session() as s:
            return s.execute(delete(Draft).where(Draft.expires_at <= utcnow())).rowcount  # type: ignore[attr-defined]

    def blob_keys(self) -> set[str]:
        keys: set[str] = set()
        with self.db.read_session() as s:
            for sources in s.execute(select(Draft.sources).where(Draft.expires_at > utcnow())).scalars():
                keys |= source_blob_keys(sources or [])
        return keys
