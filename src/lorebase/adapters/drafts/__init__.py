"""Where KB drafts live: the ``drafts`` SQL table (embedded) or Redis keys with a TTL (scaled).

``build_draft_repository`` picks one from the settings; the Redis module is imported only when
``redis_url`` is set, so the embedded mode does not need the ``redis`` package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorebase.adapters.drafts.protocol import DraftRecord, DraftRepository
from lorebase.adapters.drafts.sql import SqlDraftRepository

if TYPE_CHECKING:
    from lorebase.db.engine import Database
    from lorebase.settings import Settings

__all__ = ["DraftRecord", "DraftRepository", "build_draft_repository"]


def build_draft_repository(settings: Settings, db: Database, redis_client: Any | None) -> DraftRepository:
    """Redis drafts when a Redis client is given (``settings.redis_url`` set), else the SQL table."""
    ttl_seconds = settings.draft_ttl_hours * 3600
    if redis_client is None:
        return SqlDraftRepository(db, ttl_seconds=ttl_seconds)
    from lorebase.adapters.drafts.redis import RedisDraftRepository

    return RedisDraftRepository(redis_client, prefix=settings.queue_prefix, ttl_seconds=ttl_seconds)
