"""A document's original (the uploaded file, the fetched page) behind a signed, expiring link.

``GET /api/v1/documents/{id}/original`` (a read key of the document's workspace) answers a
redirect to a link that needs no key: on the s3 store the bucket's own presigned URL; on the
local and database stores ``/api/v1/originals/{id}?expires=<unix>&sig=<hex>``, where ``sig`` is
HMAC-SHA256 with the server secret over the document id, its blob key and the expiry. A link
names one document's one blob: it cannot be moved to another document, outlive its ``expires``,
or serve bytes that replaced the ones it was made for.

The server secret is ``LOREBASE_SECRET_KEY``, or else a random key made once per deployment and
kept in the database (``server_secrets``), so every API node and worker of the deployment signs
and checks with the same key without configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from sqlalchemy import select

from lorebase.adapters.blobs.protocol import safe_filename
from lorebase.db.engine import insert_or_skip
from lorebase.db.models import Document, ServerSecret, utcnow
from lorebase.errors import Forbidden, Gone, NotFound
from lorebase.runtime import Runtime
from lorebase.services.auth import Principal

SIGNED_PATH = "/api/v1/originals/{document_id}"
_OCTET = "application/octet-stream"
#: the deployment's key, by database URL (one process may serve several in tests)
_secrets: dict[str, bytes] = {}
_SECRET_NAME = "signed_urls"
_secrets_lock = threading.Lock()


@dataclass(frozen=True)
class Original:
    data: bytes
    filename: str
    media_type: str


def server_secret(runtime: Runtime) -> bytes:
    """The key links are signed with: the setting, or the deployment's ``signed_urls`` row of
    ``server_secrets``, made by the first process that needs it (insert-or-skip, then read: racing
    processes, on any machine, agree on the row that went in)."""
    settings = runtime.settings
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    url = settings.resolved_database_url
    with _secrets_lock:
        if url not in _secrets:
            with runtime.db.session() as s:
                s.execute(
                    insert_or_skip(
                        s,
                        ServerSecret,
                        {"name": _SECRET_NAME, "value": secrets.token_hex(32), "created_at": utcnow()},
                        index_elements=["name"],
                    )
                )
                value = s.execute(
                    select(ServerSecret.value).where(ServerSecret.name == _SECRET_NAME)
                ).scalar_one()
            _secrets[url] = value.encode()
        return _secrets[url]


def signature(secret: bytes, document_id: str, blob_key: str, expires: int) -> str:
    message = f"{document_id}\n{blob_key}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _download_name(doc: Document) -> str:
    return safe_filename(doc.filename or doc.title, fallback=f"{doc.id}")


def link(runtime: Runtime, p: Principal, document_id: str) -> str:
    """Where the original of a document of ``p``'s workspace can be fetched for
    ``signed_url_ttl_seconds``: 404 for another workspace's, 410 when no original is kept."""
    with runtime.db.read_session() as s:
        doc = s.execute(
            select(Document).where(Document.id == document_id, Document.workspace_id == p.workspace_id)
        ).scalar_one_or_none()
        if doc is None:
            raise NotFound("document not found")
        if doc.blob_key is None:
            raise Gone("this document's original is no longer kept (removed by retention, or never stored)")
        blob_key, name, media_type = doc.blob_key, _download_name(doc), doc.media_type or _OCTET
    ttl = runtime.settings.signed_url_ttl_seconds
    presigned = runtime.blobs.presigned_url(blob_key, ttl_seconds=ttl, filename=name, media_type=media_type)
    if presigned is not None:
        return presigned
    expires = int(time.time()) + ttl
    sig = signature(server_secret(runtime), document_id, blob_key, expires)
    # ``sig`` last: everything before it is what it signs
    return SIGNED_PATH.format(document_id=document_id) + "?" + urlencode({"expires": expires, "sig": sig})


def signed(runtime: Runtime, document_id: str, *, expires: int, sig: str) -> Original:
    """The original behind a link made by :func:`link`; 403 when the signature does not hold
    (tampered, another document's, another blob's) or the link expired."""
    with runtime.db.read_session() as s:
        doc = s.execute(select(Document).where(Document.id == document_id)).scalar_one_or_none()
        blob_key = doc.blob_key if doc is not None else None
        name = _download_name(doc) if doc is not None else ""
        media_type = (doc.media_type if doc is not None else None) or _OCTET
    expected = signature(server_secret(runtime), document_id, blob_key or "", expires)
    if blob_key is None or not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
        raise Forbidden(
            "this link is not valid (or the original is no longer kept)", code="invalid_signature"
        )
    if expires < time.time():
        at = datetime.fromtimestamp(expires, UTC).isoformat()
        raise Forbidden(f"this link expired at {at}; ask for a new one", code="link_expired")
    try:
        data = runtime.blobs.get(blob_key)
    except NotFound:
        raise Gone("this document's original is no longer kept") from None
    return Original(data, name, media_type)
