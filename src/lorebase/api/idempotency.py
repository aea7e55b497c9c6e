"""``Idempotency-Key`` on the POSTs that create work (Stripe's semantics, as in the IETF draft
draft-ietf-httpapi-idempotency-key-header).

A client that sends ``Idempotency-Key: <1..255 chars>`` may retry the request safely: the first
request runs and its response is stored; a retry with the same key and the same request gets that
response again, byte for byte, with ``Idempotent-Replayed: true``, and nothing runs twice.

Two halves meet through the ASGI scope:

* ``IDEMPOTENT``, a route dependency, validates the key, fingerprints the request and claims the
  key by inserting an ``in_flight`` row; the unique constraint on (workspace, key, method, path)
  makes the claim atomic, so of two racing requests exactly one runs. The loser answers at once:
  the stored response (replay), 409 (still in flight) or 422 (the key came with another request).
* ``IdempotencyMiddleware`` wraps every POST and PATCH (``PATCH /kbs/{id}`` may start a re-index). When the dependency claimed a key, it holds the
  response back until the row has stored it (status < 500) or been released (a 5xx, or the route
  raised), so a client that saw an answer always gets that answer replayed, and a failure that
  may be worth retrying never sticks to the key.

Rows expire after ``settings.idempotency_ttl_seconds``; each claim deletes the expired ones. An
``in_flight`` row older than ``IN_FLIGHT_TIMEOUT`` belongs to a process that died without
releasing it (a crash between claim and answer) and may be claimed again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Header, Request, Response
from python_multipart.multipart import parse_options_header
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lorebase.api import uploads
from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.db.engine import Database
from lorebase.db.models import IdempotencyKey, new_id, utcnow
from lorebase.errors import LorebaseError, PayloadTooLarge
from lorebase.settings import Settings

log = logging.getLogger("lorebase.api")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
#: an in-flight claim this old was left by a process that died mid-request; it may be taken over
IN_FLIGHT_TIMEOUT = timedelta(minutes=10)
IN_FLIGHT, DONE = "in_flight", "done"
_SCOPE_SLOT = "lorebase.idempotency"


class InvalidIdempotencyKey(LorebaseError):
    code = "invalid_idempotency_key"
    status_code = 400


class IdempotencyKeyReused(LorebaseError):
    """The key was first used with another request: retrying cannot help, use a new key."""

    code = "idempotency_key_reused"
    status_code = 422


class IdempotencyKeyInUse(LorebaseError):
    """The first request with this key has not answered yet: retry a little later."""

    code = "idempotency_key_in_use"
    status_code = 409


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    content_type: str | None
    body: bytes


class Replay(Exception):
    """Raised by the dependency to answer with a stored response instead of running the route."""

    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("idempotent replay")
        self.stored = stored


@dataclass(slots=True)
class _Slot:
    """Put in the scope by the middleware; filled by the dependency when it claims a key."""

    db: Database | None = None
    claim_id: str | None = None


# -- the request fingerprint ----------------------------------------------------------------------


def fingerprint(*, method: str, path: str, query: str, content_type: str, body: bytes) -> str:
    """sha256 over method, path, query, content type and the sha256 of the raw body.

    A multipart body's boundary is random per send (so two sends of the same files differ only
    there); it is replaced by a fixed one in both the body and the content type.
    """
    digest = BodyDigest(content_type)
    digest.update(body)
    return digest.fingerprint(method=method, path=path, query=query)


class BodyDigest:
    """``fingerprint`` fed chunk by chunk, so that a large body need not be held in memory."""

    REPLACEMENT = b"--lorebase-boundary"

    def __init__(self, content_type: str) -> None:
        ctype, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        self.marker: bytes | None = None
        self.content_type = content_type
        if ctype == b"multipart/form-data" and boundary:
            self.marker = b"--" + boundary
            self.content_type = "multipart/form-data"
        self._carry = b""
        self._body = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        if self.marker is None:
            self._body.update(chunk)
            return
        pieces = (self._carry + chunk).split(self.marker)
        out = self.REPLACEMENT.join(pieces[:-1]) + (self.REPLACEMENT if len(pieces) > 1 else b"")
        tail, keep = pieces[-1], len(self.marker) - 1  # a marker may straddle the next chunk
        if len(tail) > keep:
            out, tail = out + tail[:-keep], tail[-keep:]
        self._body.update(out)
        self._carry = tail

    def fingerprint(self, *, method: str, path: str, query: str) -> str:
        self._body.update(self._carry)
        self._carry = b""
        digest = hashlib.sha256()
        body = self._body.hexdigest().encode()
        for part in (method.encode(), path.encode(), query.encode(), self.content_type.encode(), body):
            digest.update(b"%d:" % len(part))
            digest.update(part)
        return digest.hexdigest()


# -- the key's row: claim, finish, release --------------------------------------------------------


def claim(
    db: Database, *, workspace_id: str, key: str, method: str, path: str, fingerprint: str, ttl: timedelta
) -> str:
    """Claim the key for this request and return the claim's id, or raise what to answer instead:
    ``Replay`` (finished, same request), ``IdempotencyKeyReused`` or ``IdempotencyKeyInUse``."""
    scope = (
        IdempotencyKey.workspace_id == workspace_id,
        IdempotencyKey.key == key,
        IdempotencyKey.method == method,
        IdempotencyKey.path == path,
    )
    for _ in range(3):  # a competing claim can vanish between our insert and our read: look again
        now = utcnow()
        claim_id = new_id()
        try:
            with db.session() as s:
                s.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
                s.execute(
                    delete(IdempotencyKey).where(
                        *scope,
                        IdempotencyKey.status == IN_FLIGHT,
                        IdempotencyKey.created_at <= now - IN_FLIGHT_TIMEOUT,
                    )
                )
                s.execute(
                    insert(IdempotencyKey).values(
                        id=claim_id,
                        workspace_id=workspace_id,
                        key=key,
                        method=method,
                        path=path,
                        fingerprint=fingerprint,
                        status=IN_FLIGHT,
                        created_at=now,
                        expires_at=now + ttl,
                    )
                )
            return claim_id
        except IntegrityError:
            pass  # the key is taken: see by whom
        with db.read_session() as s:
            row = s.execute(select(IdempotencyKey).where(*scope)).scalar_one_or_none()
        if row is None or row.expires_at <= utcnow():
            continue
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key!r} was used with a different request (method, path or body); "
                "send a new key for a new request",
                details={"idempotency_key": key},
            )
        if row.status == IN_FLIGHT or row.response_status is None:
            break
        raise Replay(StoredResponse(row.response_status, row.response_content_type, row.response_body or b""))
    raise IdempotencyKeyInUse(
        f"a request with Idempotency-Key {key!r} is still being processed; retry once it has answered",
        details={"idempotency_key": key},
    )


def finish(db: Database, claim_id: str, *, status: int, content_type: str | None, body: bytes) -> None:
    """Store the answer (status < 500) for replays, or release the key so the client can retry."""
    if status >= 500:
        release(db, claim_id)
        return
    with db.session() as s:
        s.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == claim_id, IdempotencyKey.status == IN_FLIGHT)
            .values(
                status=DONE,
                response_status=status,
                response_content_type=content_type,
                response_body=body,
                finished_at=utcnow(),
            )
        )


def release(db: Database, claim_id: str) -> None:
    with db.session() as s:
        s.execute(
            delete(IdempotencyKey).where(IdempotencyKey.id == claim_id, IdempotencyKey.status == IN_FLIGHT)
        )


# -- HTTP: the dependency, the middleware, the replay ---------------------------------------------

#: the methods whose routes may declare ``IDEMPOTENT`` (the middleware wraps only these)
_WRAPPED = frozenset({"POST", "PATCH"})


async def _claim_key(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Makes a retry safe: the same key with the same request within 24 h replays "
            "the first response (`Idempotent-Replayed: true`) instead of running again. 1-255 chars.",
        ),
    ] = None,
) -> None:
    if key is None:
        return
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} characters long (got {len(key)})"
        )
    slot = request.scope.get(_SCOPE_SLOT)
    if not isinstance(slot, _Slot):
        raise RuntimeError("IdempotencyMiddleware is not installed (api.idempotency.install)")
    fp = await _fingerprint_request(request, runtime.settings)
    slot.claim_id = await run_in_threadpool(
        lambda: claim(
            runtime.db,
            workspace_id=principal.workspace_id,
            key=key,
            method=request.method,
            path=request.scope["path"],
            fingerprint=fp,
            ttl=timedelta(seconds=runtime.settings.idempotency_ttl_seconds),
        )
    )
    slot.db = runtime.db


async def _fingerprint_request(request: Request, settings: Settings) -> str:
    """Fingerprint the body while reading it, under the upload cap (413 beyond it), and keep it
    for the route: a multipart body in a spool file (bounded memory), any other in memory."""
    cap = uploads.request_cap(settings)
    uploads.check_content_length(request, cap)
    digest = BodyDigest(request.headers.get("content-type", ""))
    received = 0
    if uploads.is_multipart(request):
        directory = uploads.spool_dir(settings)
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix="body-")
        request.scope[uploads.SPOOLED_BODY] = Path(name)  # deleted by the middleware
        with os.fdopen(fd, "wb") as spool:
            async for chunk in request.stream():
                received += len(chunk)
                if received > cap:
                    raise PayloadTooLarge(f"the request body is over the {cap} byte limit per request")
                digest.update(chunk)
                await anyio.to_thread.run_sync(spool.write, chunk)
    else:
        body = await uploads.read_body(request, cap)
        request._body = body  # kept on the request: the route reads it again
        digest.update(body)
    return digest.fingerprint(method=request.method, path=request.scope["path"], query=request.url.query)


IDEMPOTENT = Depends(_claim_key)
"""Add to a route's ``dependencies`` to honour ``Idempotency-Key`` there."""


class IdempotencyMiddleware:
    """Stores (or releases) a claimed key with the response before the client receives it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WRAPPED:
            await self.app(scope, receive, send)
            return
        slot = scope[_SCOPE_SLOT] = _Slot()
        start: Message = {}
        chunks: list[bytes] = []

        async def hold(message: Message) -> None:
            nonlocal start
            if slot.claim_id is None or message["type"] not in ("http.response.start", "http.response.body"):
                await send(message)
            elif message["type"] == "http.response.start":
                start = message
            else:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                await _settle(slot, status=start["status"], content_type=_content_type(start), body=body)
                await send(start)
                await send({"type": "http.response.body", "body": body})

        try:
            await self.app(scope, receive, hold)
        finally:
            spooled = scope.get(uploads.SPOOLED_BODY)
            if isinstance(spooled, Path):
                spooled.unlink(missing_ok=True)
            if slot.claim_id is not None:  # raised (or never answered): free the key for a retry
                with anyio.CancelScope(shield=True):
                    await _settle(slot, status=500, content_type=None, body=b"")


async def _settle(slot: _Slot, *, status: int, content_type: str | None, body: bytes) -> None:
    claim_id, db = slot.claim_id, slot.db
    slot.claim_id = None
    assert claim_id is not None and db is not None
    try:
        await run_in_threadpool(finish, db, claim_id, status=status, content_type=content_type, body=body)
    except Exception:  # the work is done: answer anyway; the key stays in flight until it times out
        log.exception("could not store the response of Idempotency-Key claim %s", claim_id)


def _content_type(start: Message) -> str | None:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return bytes(value).decode("latin-1")
    return None


async def _replay(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Replay)
    stored = exc.stored
    headers = {REPLAYED_HEADER: "true"}
    if stored.content_type:
        headers["content-type"] = stored.content_type
    return Response(content=stored.body, status_code=stored.status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_middleware(IdempotencyMiddleware)
    app.add_exception_handler(Replay, _replay)
