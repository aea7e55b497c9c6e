"""API keys and workspaces.

Keys are 256-bit random secrets shown once; the database keeps only their SHA-256 (a fast hash
is enough for high-entropy secrets) and a short prefix for display.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lorebase.db.engine import Database
from lorebase.db.models import ApiKey, Workspace, utcnow
from lorebase.errors import Unauthorized

KEY_PREFIX = "lb_"
ALL_SCOPES = ("read", "write", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: every service call is scoped by ``workspace_id``."""

    workspace_id: str
    key_id: str | None
    scopes: tuple[str, ...] = ALL_SCOPES


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_workspace(session: Session, name: str) -> Workspace:
    ws = session.execute(select(Workspace).where(Workspace.name == name)).scalar_one_or_none()
    if ws is None:
        ws = Workspace(name=name)
        session.add(ws)
        session.flush()
    return ws


def create_key(
    db: Database, *, workspace: str = "default", name: str = "", scopes: tuple[str, ...] = ALL_SCOPES
) -> tuple[str, ApiKey]:
    """Create a key (and the workspace when new); return the plain key, which is never stored."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.session() as s:
        ws = get_or_create_workspace(s, workspace)
        key = ApiKey(
            workspace_id=ws.id, name=name, prefix=plain[:10], key_hash=hash_key(plain), scopes=list(scopes)
        )
        s.add(key)
        s.flush()
    return plain, key


def has_any_key(db: Database) -> bool:
    with db.read_session() as s:
        return s.execute(select(ApiKey.id).limit(1)).first() is not None


def authenticate(db: Database, presented: str | None) -> Principal:
    if not presented:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    with db.read_session() as s:
        key = s.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(presented))).scalar_one_or_none()
    now = utcnow()
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise Unauthorized("invalid, revoked or expired API key")
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        with db.session() as s:  # throttled so reads do not turn into writes on every request
            s.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return Principal(workspace_id=key.workspace_id, key_id=key.id, scopes=tuple(key.scopes or ()))


def local_principal(db: Database, workspace: str = "default") -> Principal:
    """The CLI working on the local data dir acts as the named workspace."""
    with db.session() as s:
        ws = get_or_create_workspace(s, workspace)
        return Principal(workspace_id=ws.id, key_id=None)
