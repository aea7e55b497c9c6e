"""Draft repository contract: where KB drafts live until finalize turns one into a KB.

A draft is small JSON (name, config, source descriptions); uploaded bytes stay in the blob store
and are only referenced by key. Two implementations, chosen by ``settings.redis_url``:
``sql.py`` (the ``drafts`` table, embedded mode) and ``redis.py`` (one key per draft with a TTL,
scaled mode: drafts never touch the SQL database).

Behaviour every implementation guarantees:

- **Scoping**: every read and write names the workspace; a draft of another workspace, a
  missing one and an expired one are all ``NotFound`` (never reveal others' ids).
- **Expiry**: ``expires_at`` is ``ttl`` after the last change; create and every ``update``
  push it a full TTL ahead.
- **No lost updates**: concurrent ``update`` calls on one draft are serialised; each change
  sees the result of the previous one (two "add source" calls both land).
- **Single-winner take**: of concurrent ``take`` calls on one draft exactly one returns it;
  the others raise ``NotFound``, so one draft can never become two knowledge bases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.orm import Session


@dataclass
class DraftRecord:
    """One draft as the services see it, whatever stores it."""

    id: str
    workspace_id: str
    name: str
    description: str | None
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    sources: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class DraftRepository(Protocol):
    def create(self, draft: DraftRecord) -> DraftRecord:
        """Store a new draft; ``updated_at`` and ``expires_at`` are set here (now, now + TTL)."""
        ...

    def get(self, workspace_id: str, draft_id: str) -> DraftRecord:
        """The draft, or ``NotFound`` if missing, expired or of another workspace."""
        ...

    def update(self, workspace_id: str, draft_id: str, change: Callable[[DraftRecord], None]) -> DraftRecord:
        """Atomic read-modify-write: ``change`` mutates the loaded draft, which is then saved with
        ``updated_at`` = now and a fresh TTL, and returned.

        ``change`` may run more than once (an optimistic backend retries it after a concurrent
        write), so it must only mutate the record. If it raises, nothing is saved.
        """
        ...

    def delete(self, workspace_id: str, draft_id: str) -> None:
        """Remove the draft; ``NotFound`` if it is not there (for this workspace)."""
        ...

    def take(self, workspace_id: str, draft_id: str, session: Session) -> DraftRecord:
        """Remove the draft and return it, for finalize; exactly one concurrent caller wins.

        Where the draft lives in the SQL database the removal joins ``session``'s transaction,
        so it commits or rolls back together with the KB it becomes. Elsewhere it happens at
        once, and the caller must ``put_back`` the draft if its transaction then fails.
        """
        ...

    def put_back(self, draft: DraftRecord) -> None:
        """Undo a ``take`` whose transaction failed, keeping the draft's ``expires_at``.

        A no-op where ``take`` joined the transaction (its rollback already restored the draft),
        and when the draft has expired meanwhile.
        """
        ...

    def purge_expired(self) -> int:
        """Delete expired drafts and return how many (0 where the store expires keys itself)."""
        ...

    def blob_keys(self) -> set[str]:
        """The blob keys that the sources of every draft not yet expired name (their uploads): the
        blob GC keeps these. An expired draft's keys are not included even if it is still stored."""
        ...


def source_blob_keys(sources: list[dict[str, Any]]) -> set[str]:
    """The blob keys in a draft's ``sources`` (each source's ``items``, ``SourceItem.to_json``)."""
    return {
        key
        for source in sources
        for item in source.get("items") or ()
        if isinstance(key := item.get("blob_key"), str)
    }
