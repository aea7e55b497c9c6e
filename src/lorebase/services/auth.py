"""API keys and workspaces.

Keys are 256-bit random secrets shown once; the database keeps only their SHA-256 (a fast hash
is enough for high-entropy secrets) and a short prefix for display.

Scopes nest: ``admin`` ⊇ ``write`` ⊇ ``read``. ``read`` lists, gets, searches, previews and
leaves feedback; ``write`` also creates, changes, deletes and controls pipelines; ``admin`` also
manages the workspace's keys. :func:`required_scope` decides what a request needs.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from lorebase.db.engine import Database
from lorebase.db.models import ApiKey, Workspace, utcnow
from lorebase.errors import Forbidden, InvalidInput, NotFound, Unauthorized

KEY_PREFIX = "lb_"
ALL_SCOPES = ("read", "write", "admin")
#: what each scope grants, the scopes below it included
_IMPLIED = {"read": {"read"}, "write": {"read", "write"}, "admin": {"read", "write", "admin"}}
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: POST routes that change nothing the workspace owns (searching logs the query; feedback rates
#: a logged query; preview and validate only read a draft): a ``read`` key may call them
READ_ONLY_POSTS = frozenset(
    {
        "/api/v1/kbs/{kb_id}/search",
        "/api/v1/queries/{query_id}/feedback",
        "/api/v1/kb-drafts/{draft_id}/preview",
        "/api/v1/kb-drafts/{draft_id}/validate",
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: every service call is scoped by ``workspace_id``."""

    workspace_id: str
    key_id: str | None
    scopes: tuple[str, ...] = ALL_SCOPES

    def allows(self, scope: str) -> bool:
        return any(scope in _IMPLIED.get(s, ()) for s in self.scopes)

    def require(self, scope: str, doing: str = "this") -> None:
        if not self.allows(scope):
            have = ", ".join(self.scopes) or "none"
            raise Forbidden(
                f"this API key has scope(s) {have}; {doing} needs {scope!r}",
                details={"required": scope, "scopes": list(self.scopes)},
            )


def required_scope(method: str, route_path: str) -> str:
    """The scope a request needs: ``read`` for safe methods and :data:`READ_ONLY_POSTS`,
    ``admin`` for key management and changing the workspace (its tier, its retention),
    ``write`` for everything else."""
    if route_path.startswith("/api/v1/keys"):
        return "admin"
    if route_path == "/api/v1/workspace" and method.upper() not in _SAFE_METHODS:
        return "admin"
    if method.upper() in _SAFE_METHODS or route_path in READ_ONLY_POSTS:
        return "read"
    return "write"


def normalize_scopes(scopes: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"read,write"`` or a list → a checked tuple in canonical order."""
    items = [x.strip().lower() for x in (scopes.split(",") if isinstance(scopes, str) else scopes)]
    items = [x for x in items if x]
    unknown = sorted(set(items) - set(ALL_SCOPES))
    if unknown or not items:
        raise InvalidInput(f"scopes must be a non-empty subset of {list(ALL_SCOPES)}; got {items}")
    return tuple(x for x in ALL_SCOPES if x in items)


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
    db: Database,
    *,
    workspace: str = "default",
    name: str = "",
    scopes: tuple[str, ...] | str = ALL_SCOPES,
    expires_at: datetime | None = None,
    workspace_id: str | None = None,
) -> tuple[str, ApiKey]:
    """Create a key (and the workspace when new, unless ``workspace_id`` names an existing one);
    return the plain key, which is never stored."""
    checked = normalize_scopes(scopes)
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at must be in the future")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)  # 32 random bytes: 256 bits
    with db.session() as s:
        ws_id = workspace_id or get_or_create_workspace(s, workspace).id
        key = ApiKey(
            workspace_id=ws_id,
            name=name[:200],
            prefix=plain[:10],
            key_hash=hash_key(plain),
            scopes=list(checked),
            expires_at=expires_at,
        )
        s.add(key)
        s.flush()
        s.refresh(key)
        s.expunge(key)
    return plain, key


def key_to_dict(key: ApiKey, workspace: str | None = None) -> dict[str, Any]:
    """What may be shown about a key: never its hash, and the secret is not stored at all."""
    now = utcnow()
    state = "active"
    if key.revoked_at is not None:
        state = "revoked"
    elif key.expires_at is not None and key.expires_at <= now:
        state = "expired"
    out: dict[str, Any] = {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "scopes": list(key.scopes or ()),
        "state": state,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
    }
    if workspace is not None:
        out["workspace"] = workspace
    return out


def list_keys(db: Database, *, workspace_id: str | None = None) -> list[dict[str, Any]]:
    """Keys (newest first), of one workspace or of all, with their workspace's name."""
    with db.read_session() as s:
        q = select(ApiKey, Workspace.name).join(Workspace, Workspace.id == ApiKey.workspace_id)
        if workspace_id is not None:
            q = q.where(ApiKey.workspace_id == workspace_id)
        rows = s.execute(q.order_by(ApiKey.created_at.desc(), ApiKey.id)).all()
        return [key_to_dict(key, ws_name) for key, ws_name in rows]


def revoke_key(db: Database, ident: str, *, workspace_id: str | None = None) -> dict[str, Any]:
    """Revoke a key by id or by its shown prefix (within ``workspace_id`` when given). Revoking
    twice is harmless; the first revocation time is kept. An ambiguous prefix is refused."""
    ident = ident.strip().rstrip("…").rstrip(".")
    if not ident:
        raise InvalidInput("name a key by its id or prefix")
    with db.session() as s:
        q = select(ApiKey).where(or_(ApiKey.id == ident, ApiKey.prefix == ident))
        if workspace_id is not None:
            q = q.where(ApiKey.workspace_id == workspace_id)
        found = list(s.execute(q).scalars())
        if not found:
            raise NotFound(f"no API key {ident!r}")
        if len(found) > 1:
            raise InvalidInput(f"{ident!r} matches {len(found)} keys; use the key's id")
        key = found[0]
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        s.flush()
        return key_to_dict(key)


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
