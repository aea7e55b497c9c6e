"""The :class:`~lorebase.mcp.backend.Backend` of ``lorebase mcp`` when ``LOREBASE_SERVER_URL`` is
set: plain HTTP calls to the server's REST API with ``LOREBASE_API_KEY``, so the server decides
scopes and workspace walls, and its error messages reach the agent unchanged.

Why REST and not a proxy of the server's ``/mcp``: the tools stay defined once (``tools.py``)
over one interface, and this module is the one place to swap for ``lorebase.client`` once that
package exists (the same calls, typed).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from lorebase.errors import Forbidden, InvalidInput, LorebaseError, NotFound, Unauthorized

#: the API's error classes by status; any other status keeps the code the server sent
_BY_STATUS: dict[int, type[LorebaseError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    422: InvalidInput,
    400: InvalidInput,
}


def _segment(value: str) -> str:
    return quote(value, safe="")


class RemoteBackend:
    """The REST API of the server at ``base_url``, called with ``api_key``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        read_only: bool = False,
        timeout: float = 60.0,
        transport: Any = None,
    ) -> None:
        self.read_only = read_only  # ``lorebase mcp --read-only``: refused here, whatever the key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/api/v1", headers=headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LorebaseError(
                f"the lorebase server at {self.client.base_url} cannot be reached: {exc}", code="unavailable"
            ) from None
        if response.is_success:
            return response.json()
        raise _error(response)

    async def list_kbs(self, *, limit: int, offset: int) -> dict[str, Any]:
        out: dict[str, Any] = await self._request("GET", "/kbs", params={"limit": limit, "offset": offset})
        return out

    async def find_kb(self, name_or_id: str) -> dict[str, Any]:
        try:
            kb: dict[str, Any] = await self._request("GET", f"/kbs/{_segment(name_or_id)}")
            return kb
        except NotFound:
            pass
        listed = await self.list_kbs(limit=1000, offset=0)  # newest first, as the CLI resolves names
        for kb in listed["items"]:
            if kb["name"] == name_or_id:
                return kb
        raise NotFound(f"knowledge base {name_or_id} not found")

    async def search(
        self, kb: str, query: str, *, mode: str, top_k: int, filters: dict[str, Any] | None
    ) -> dict[str, Any]:
        body = {"query": query, "mode": mode, "top_k": top_k, "filters": filters}
        kb_id = (await self.find_kb(kb))["id"]
        out: dict[str, Any] = await self._request("POST", f"/kbs/{_segment(kb_id)}/search", json=body)
        return out

    async def get_document(self, document_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._request("GET", f"/documents/{_segment(document_id)}")
        return out

    async def list_chunks(self, document_id: str, *, limit: int) -> dict[str, Any]:
        out: dict[str, Any] = await self._request(
            "GET", f"/documents/{_segment(document_id)}/chunks", params={"limit": limit}
        )
        return out

    async def add_documents(self, kb: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        if self.read_only:
            raise Forbidden(
                "lorebase mcp runs with --read-only; add_documents needs 'write'",
                details={"required": "write", "scopes": ["read"]},
            )
        kb_id = (await self.find_kb(kb))["id"]  # the server checks the scope when adding
        out: dict[str, Any] = await self._request(
            "POST", f"/kbs/{_segment(kb_id)}/documents", json={"documents": records}
        )
        return out

    async def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._request("GET", f"/pipelines/{_segment(pipeline_id)}")
        return out


def _error(response: httpx.Response) -> LorebaseError:
    """The server's ``{"error": {code, message, details}}`` as the error class of its status."""
    try:
        error = response.json()["error"]
        message, code, details = str(error["message"]), error.get("code"), error.get("details")
    except (ValueError, KeyError, TypeError):
        message, code, details = f"the server answered {response.status_code}", None, None
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        exc = LorebaseError(message, code=code, details=details)
        exc.status_code = response.status_code
        return exc
    return cls(message, details=details)
