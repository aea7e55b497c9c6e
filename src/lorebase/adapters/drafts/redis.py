"""Drafts in Redis (scaled mode): one key per draft, ``{queue_prefix}:draft:{id}``, holding JSON,
with a TTL of ``draft_ttl_hours`` that every change renews; Redis expires drafts by itself.

Concurrency: changes are optimistic transactions (``WATCH`` the key, read, change, ``MULTI`` /
``SET`` / ``EXEC``; retried when another client wrote the key in between), so concurrent changes
never overwrite each other. ``take`` (finalize) and ``delete`` run one Lua script that checks the
workspace and deletes the key atomically: only one caller ever gets the draft back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy.orm import Session

from lorebase.adapters.drafts.protocol import DraftRecord, source_blob_keys
from lorebase.db.models import utcnow
from lorebase.errors import Conflict, NotFound

#: GET + workspace check + DEL as one step; returns the JSON, or nil if absent or not the workspace's.
#: The draft is copied to a tombstone (KEYS[2], TTL ARGV[2] ms) that ``blob_keys`` still reads: a
#: finalize commits the documents that take over its uploads' references after the take, in SQL
_TAKE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, doc = pcall(cjson.decode, raw)
if not ok or doc['workspace_id'] ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], raw, 'PX', ARGV[2])
return raw
"""

#: how long a taken draft's uploads still count as referenced (its finalize transaction is far shorter)
TOMBSTONE_MS = 15 * 60 * 1000

#: optimistic retries before giving up on a draft that other clients keep changing
MAX_ATTEMPTS = 50


def _dump(draft: DraftRecord) -> str:
    doc: dict[str, Any] = {
        "workspace_id": draft.workspace_id,
        "name": draft.name,
        "description": draft.description,
        "config": draft.config,
        "sources": draft.sources,
        "created_at": draft.created_at.isoformat(),
        "updated_at": draft.updated_at.isoformat(),
        "expires_at": draft.expires_at.isoformat(),
    }
    return json.dumps(doc, separators=(",", ":"))


class RedisDraftRepository:
    def __init__(self, client: redis.Redis, *, prefix: str, ttl_seconds: float) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = timedelta(seconds=ttl_seconds)
        self._take = client.register_script(_TAKE)

    def key(self, draft_id: str) -> str:
        return f"{self.prefix}:draft:{draft_id}"

    def _taken(self, draft_id: str) -> list[str]:
        return [self.key(draft_id), f"{self.prefix}:draft-taken:{draft_id}"]

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl.total_seconds() * 1000))

    def _parse(self, raw: bytes | str | None, workspace_id: str, draft_id: str) -> DraftRecord:
        doc = json.loads(raw) if raw is not None else None
        if doc is None or doc.get("workspace_id") != workspace_id:
            raise NotFound(f"draft {draft_id} not found (or expired)")
        draft = DraftRecord(
            id=draft_id,
            workspace_id=doc["workspace_id"],
            name=doc["name"],
            description=doc.get("description"),
            config=doc.get("config") or {},
            sources=doc.get("sources") or [],
            created_at=datetime.fromisoformat(doc["created_at"]),
            updated_at=datetime.fromisoformat(doc["updated_at"]),
            expires_at=datetime.fromisoformat(doc["expires_at"]),
        )
        if draft.expires_at <= utcnow():  # Redis has not reaped it yet
            raise NotFound(f"draft {draft_id} not found (or expired)")
        return draft

    def create(self, draft: DraftRecord) -> DraftRecord:
        now = utcnow()
        draft.updated_at, draft.expires_at = now, now + self.ttl
        self.client.set(self.key(draft.id), _dump(draft), px=self._ttl_ms, nx=True)
        return draft

    def get(self, workspace_id: str, draft_id: str) -> DraftRecord:
        return self._parse(self.client.get(self.key(draft_id)), workspace_id, draft_id)

    def update(self, workspace_id: str, draft_id: str, change: Callable[[DraftRecord], None]) -> DraftRecord:
        key = self.key(draft_id)
        with self.client.pipeline() as pipe:
            for _ in range(MAX_ATTEMPTS):
                try:
                    pipe.watch(key)
                    draft = self._parse(pipe.get(key), workspace_id, draft_id)
                    change(draft)
                    now = utcnow()
                    draft.updated_at, draft.expires_at = now, now + self.ttl
                    pipe.multi()
                    pipe.set(key, _dump(draft), px=self._ttl_ms)
                    pipe.execute()
                    return draft
                except redis.WatchError:
                    continue  # another client changed the draft since our read: redo on its result
        raise Conflict(f"draft {draft_id} is being changed by too many clients at once; try again")

    def delete(self, workspace_id: str, draft_id: str) -> None:
        if self._take(keys=self._taken(draft_id), args=[workspace_id, TOMBSTONE_MS]) is None:
            raise NotFound(f"draft {draft_id} not found (or expired)")

    def take(self, workspace_id: str, draft_id: str, session: Session) -> DraftRecord:
        raw = self._take(keys=self._taken(draft_id), args=[workspace_id, TOMBSTONE_MS])
        return self._parse(raw, workspace_id, draft_id)

    def put_back(self, draft: DraftRecord) -> None:
        left_ms = int((draft.expires_at - utcnow()).total_seconds() * 1000)
        if left_ms > 0:
            self.client.set(self.key(draft.id), _dump(draft), px=left_ms, nx=True)

    def purge_expired(self) -> int:
        """Nothing to do: every key carries its TTL and Redis removes it."""
        return 0

    def blob_keys(self) -> set[str]:
        """The live drafts' keys, then the tombstones' of drafts taken in the last
        :data:`TOMBSTONE_MS`: in that order, a ``take`` (draft → tombstone, atomic) between the
        two reads is seen by the second (``SCAN``, not ``KEYS``: Redis is never blocked long)."""
        now = utcnow()
        keys = self._keys_in(
            f"{self.prefix}:draft:*", lambda doc: datetime.fromisoformat(doc["expires_at"]) > now
        )
        return keys | self._keys_in(f"{self.prefix}:draft-taken:*", lambda doc: True)

    def _keys_in(self, match: str, wanted: Callable[[dict[str, Any]], bool]) -> set[str]:
        keys: set[str] = set()
        names = list(self.client.scan_iter(match=match, count=500))
        for i in range(0, len(names), 500):
            for raw in self.client.mget(names[i : i + 500]):
                if raw is None:  # gone between the scan and the read
                    continue
                doc = json.loads(raw)
                if wanted(doc):
                    keys |= source_blob_keys(doc.get("sources") or [])
        return keys
