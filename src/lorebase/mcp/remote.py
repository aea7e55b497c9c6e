"""The :class:`~lorebase.mcp.backend.Backend` of ``lorebase mcp`` when ``LOREBASE_SERVER_URL`` is
set: the server's REST API through :class:`lorebase.client.AsyncClient` with ``LOREBASE_API_KEY``,
so the server decides scopes and workspace walls, and its error messages reach the agent
unchanged (the client's errors are ``lorebase.errors.LorebaseError``, which the tools turn into
tool errors).

Why REST and not a proxy of the server's ``/mcp``: the tools stay defined once (``tools.py``)
over one interface, and the client already owns retries, error classes and the API's shapes.
"""

from __future__ import annotations

from typing import Any

from lorebase.client import AsyncClient, ConnectionFailed
from lorebase.errors import Forbidden, LorebaseError


class RemoteBackend:
    """The REST API of the server at ``base_url``, called with ``api_key``."""

    def __init__(
        self, base_url: str, api_key: str | None, *, read_only: bool = False, timeout: float = 60.0
    ) -> None:
        self.read_only = read_only  # ``lorebase mcp --read-only``: refused here, whatever the key
        self.client = AsyncClient(base_url, api_key, timeout=timeout)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def list_kbs(self, *, limit: int, offset: int) -> dict[str, Any]:
        page = await _reached(self, self.client.list_kbs(limit=limit, offset=offset))
        return dict(page.model_dump(mode="json"))

    async def find_kb(self, name_or_id: str) -> dict[str, Any]:
        kb = await _reached(self, self.client.find_kb(name_or_id))
        return dict(kb.model_dump(mode="json"))

    async def search(
        self, kb: str, query: str, *, mode: str, top_k: int, filters: dict[str, Any] | None
    ) -> dict[str, Any]:
        kb_id = (await self.find_kb(kb))["id"]
        found = await _reached(
            self,
            self.client.search(kb_id, query, mode=mode, top_k=top_k, filters=filters),  # type: ignore[arg-type]
        )
        return dict(found.model_dump(mode="json"))

    async def get_document(self, document_id: str) -> dict[str, Any]:
        document = await _reached(self, self.client.get_document(document_id))
        return dict(document.model_dump(mode="json"))

    async def list_chunks(self, document_id: str, *, limit: int) -> dict[str, Any]:
        page = await _reached(self, self.client.list_chunks(document_id, limit=limit))
        return dict(page.model_dump(mode="json"))

    async def add_documents(self, kb: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        if self.read_only:
            raise Forbidden(
                "lorebase mcp runs with --read-only; add_documents needs 'write'",
                details={"required": "write", "scopes": ["read"]},
            )
        kb_id = (await self.find_kb(kb))["id"]  # the server checks the scope when adding
        added = await _reached(self, self.client.add_documents(kb_id, records))
        return dict(added.model_dump(mode="json"))

    async def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        state = await _reached(self, self.client.get_pipeline(pipeline_id))
        return dict(state.model_dump(mode="json"))


async def _reached(backend: RemoteBackend, call: Any) -> Any:
    """``call``'s answer; a server that cannot be reached is named as such (after the client's
    retries), not as the failed request."""
    try:
        return await call
    except ConnectionFailed as exc:
        raise LorebaseError(
            f"the lorebase server at {backend.client.config.base_url} cannot be reached: {exc.message}",
            code="unavailable",
        ) from None
