"""What the MCP tools need from lorebase, as one small interface with two implementations.

:class:`Backend` is the seam: the tools (``tools.py``) know nothing of the database or of HTTP.
:class:`LocalBackend` calls the services the REST routes call, as one :class:`Principal` (the
caller of ``POST /mcp``, or the machine's owner for ``lorebase mcp`` on the local data dir), so
its answers are the API's and every read is walled by workspace exactly as there. The remote
implementation (``lorebase mcp`` with ``LOREBASE_SERVER_URL``) is ``remote.py``.

Every answer is plain JSON (datetimes as ISO strings), so both implementations return the same
values for the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic_core import to_jsonable_python
from starlette.concurrency import run_in_threadpool

from lorebase.api.ratelimit import identity
from lorebase.errors import NotFound
from lorebase.services import kbs, pipelines, search
from lorebase.services.auth import Principal

if TYPE_CHECKING:
    from lorebase.api.pacing import SearchPacer
    from lorebase.api.ratelimit import RateLimiter
    from lorebase.runtime import Runtime

T = TypeVar("T")


@runtime_checkable
class Backend(Protocol):
    """The operations behind the MCP tools. Each raises the errors of ``lorebase.errors`` with
    the API's messages: ``NotFound`` for anything outside the caller's workspace, ``Forbidden``
    (naming the scope needed) for a write with a ``read`` key, ``InvalidInput`` for bad input."""

    async def list_kbs(self, *, limit: int, offset: int) -> dict[str, Any]:
        """``{items, total}`` as ``GET /api/v1/kbs``."""
        ...

    async def find_kb(self, name_or_id: str) -> dict[str, Any]:
        """The KB with this id, else the newest of this name, in the caller's workspace."""
        ...

    async def search(
        self, kb: str, query: str, *, mode: str, top_k: int, filters: dict[str, Any] | None
    ) -> dict[str, Any]:
        """As ``POST /api/v1/kbs/{id}/search`` on the KB ``find_kb(kb)`` names (the query is
        logged as there)."""
        ...

    async def get_document(self, document_id: str) -> dict[str, Any]: ...

    async def list_chunks(self, document_id: str, *, limit: int) -> dict[str, Any]:
        """``{items, total}``: the document's chunks of its KB's live version, in order."""
        ...

    async def add_documents(self, kb: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """``{pipeline_id, documents}`` as ``POST /api/v1/kbs/{id}/documents`` on the KB
        ``find_kb(kb)`` names (needs ``write``)."""
        ...

    async def pipeline(self, pipeline_id: str) -> dict[str, Any]: ...


def jsonable(value: Any) -> Any:
    return to_jsonable_python(value)


class LocalBackend:
    """The services, called as ``principal``. On ``POST /mcp`` it is given the app's search pacer
    and rate limiter, so a search or an upload through MCP counts and waits as through REST."""

    def __init__(
        self,
        runtime: Runtime,
        principal: Principal,
        *,
        pacer: SearchPacer | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.runtime = runtime
        self.principal = principal
        self.pacer = pacer
        self.limiter = limiter

    async def _call(self, scope: str, doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.principal.require(scope, doing)  # as the REST route's dependency does, before all else
        return await run_in_threadpool(fn, self.runtime, self.principal, *args, **kwargs)

    async def _count(self, bucket: str, per_minute: int) -> None:
        if self.limiter is not None and per_minute > 0:
            await run_in_threadpool(self.limiter.hit, bucket, per_minute, identity(self.principal))

    async def list_kbs(self, *, limit: int, offset: int) -> dict[str, Any]:
        out = await self._call("read", "list_knowledge_bases", kbs.list_kbs, limit=limit, offset=offset)
        return jsonable(out)

    async def find_kb(self, name_or_id: str) -> dict[str, Any]:
        kb = await self._call("read", "reading a knowledge base", kbs.find_by_name, name_or_id)
        if kb is None:
            raise NotFound(f"knowledge base {name_or_id} not found")
        return jsonable(kb)

    async def search(
        self, kb: str, query: str, *, mode: str, top_k: int, filters: dict[str, Any] | None
    ) -> dict[str, Any]:
        self.principal.require("read", "search")
        await self._count("search", self.runtime.settings.limits.search_per_minute)
        args = (self.runtime, self.principal, (await self.find_kb(kb))["id"], query)
        options: dict[str, Any] = {"mode": mode, "top_k": top_k, "filters": filters}
        if self.pacer is not None:  # paced while this server ingests, as REST searches are
            out = await self.pacer.run(self.runtime, search.search, *args, **options)
        else:
            out = await run_in_threadpool(search.search, *args, **options)
        return jsonable(out)

    async def get_document(self, document_id: str) -> dict[str, Any]:
        out = await self._call("read", "get_document", kbs.get_document, document_id)
        return jsonable(out)

    async def list_chunks(self, document_id: str, *, limit: int) -> dict[str, Any]:
        out = await self._call("read", "get_document", kbs.list_chunks, document_id, limit=limit, offset=0)
        return jsonable(out)

    async def add_documents(self, kb: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        self.principal.require("write", "add_documents")  # before the KB is looked up, as REST
        await self._count("upload", self.runtime.settings.limits.uploads_per_minute)
        kb_id = (await self.find_kb(kb))["id"]
        out = await self._call("write", "add_documents", kbs.add_documents, kb_id, records=records)
        return jsonable(out)

    async def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        out = await self._call("read", "pipeline_status", pipelines.get, pipeline_id)
        return jsonable(out)
