"""The MCP server's parts without a server: the tools over a stub backend (in process, through
the SDK's client), and the remote backend over a mocked REST API (``httpx.MockTransport``)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from lorebase.errors import Forbidden, LorebaseError, NotFound
from lorebase.mcp.backend import Backend
from lorebase.mcp.remote import RemoteBackend
from lorebase.mcp.tools import build_server


class Stub:
    """A backend that knows one KB, ``notes``, and records what it was asked."""

    def __init__(self) -> None:
        self.added: list[dict[str, Any]] = []

    async def list_kbs(self, *, limit: int, offset: int) -> dict[str, Any]:
        return {"items": [{"id": "k1", "name": "notes"}], "total": 1}

    async def find_kb(self, name_or_id: str) -> dict[str, Any]:
        if name_or_id not in ("k1", "notes"):
            raise NotFound(f"knowledge base {name_or_id} not found")
        return {"id": "k1", "name": "notes"}

    async def search(
        self, kb: str, query: str, *, mode: str, top_k: int, filters: dict[str, Any] | None
    ) -> dict[str, Any]:
        await self.find_kb(kb)
        return {"query": query, "mode": mode, "top_k": top_k, "filters": filters, "results": []}

    async def get_document(self, document_id: str) -> dict[str, Any]:
        return {"id": document_id, "title": "T", "chunk_count": 2}

    async def list_chunks(self, document_id: str, *, limit: int) -> dict[str, Any]:
        return {"items": [{"id": "c0", "text": "one"}, {"id": "c1", "text": "two"}][:limit], "total": 2}

    async def add_documents(self, kb: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        raise Forbidden("this API key has scope(s) read; add_documents needs 'write'")

    async def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        return {"id": pipeline_id, "status": "completed"}


def call(tool: str, **arguments: Any) -> CallToolResult:
    stub = Stub()
    assert isinstance(stub, Backend)

    async def main() -> CallToolResult:
        async with Client(build_server(lambda _ctx: stub)) as client:
            result = await client.call_tool(tool, arguments)
            assert isinstance(result, CallToolResult)
            return result

    return anyio.run(main)


def text(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


def test_tools_pass_their_arguments_and_answer_json() -> None:
    result = call("search", kb="notes", query="q", top_k=3, mode="keyword", filters={"type": "code"})
    assert not result.is_error
    assert result.structured_content == {
        "query": "q",
        "mode": "keyword",
        "top_k": 3,
        "filters": {"type": "code"},
        "results": [],
    }
    document = call("get_document", document_id="d1", max_chunks=1).structured_content
    assert document == {
        "id": "d1",
        "title": "T",
        "chunk_count": 2,
        "chunks": [{"id": "c0", "text": "one"}],
        "chunks_total": 2,
    }


def test_refusals_are_tool_errors_with_the_apis_message() -> None:
    missing = call("search", kb="elsewhere", query="q")
    assert missing.is_error and text(missing) == "knowledge base elsewhere not found"
    forbidden = call("add_documents", kb="notes", documents=[{"text": "x"}])
    assert forbidden.is_error
    assert text(forbidden) == "this API key has scope(s) read; add_documents needs 'write'"
    invalid = call("search", kb="notes", query="q", top_k=0, mode="fuzzy")
    assert invalid.is_error and text(invalid) == (
        "the request is not valid: top_k: Input should be greater than or equal to 1; "
        "mode: Input should be 'hybrid', 'vector' or 'keyword'"
    )
    unknown_field = call("add_documents", kb="notes", documents=[{"text": "x", "body": "y"}])
    assert text(unknown_field) == "the request is not valid: documents.0.body: Extra inputs are not permitted"


def rest(handler: Any) -> RemoteBackend:
    return RemoteBackend("http://lorebase.test", "lb_key", transport=httpx.MockTransport(handler))


def test_remote_finds_a_kb_by_name_and_maps_the_apis_errors() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        assert request.headers["authorization"] == "Bearer lb_key"
        if request.url.path == "/api/v1/kbs":
            return httpx.Response(200, json={"items": [{"id": "k2", "name": "notes"}], "total": 1})
        if request.url.path.endswith("/documents"):
            error = {"code": "forbidden", "message": "needs 'write'", "details": {"required": "write"}}
            return httpx.Response(403, json={"error": error})
        if request.url.path == "/api/v1/pipelines/p1":
            return httpx.Response(502, text="bad gateway")
        error = {
            "code": "not_found",
            "message": f"knowledge base {request.url.path.rsplit('/', 1)[1]} not found",
        }
        return httpx.Response(404, json={"error": error})

    async def main() -> None:
        backend = rest(handler)
        assert (await backend.find_kb("notes"))["id"] == "k2"
        with pytest.raises(NotFound, match="knowledge base elsewhere not found"):
            await backend.find_kb("elsewhere")
        with pytest.raises(Forbidden, match="needs 'write'") as refused:
            await backend.add_documents("notes", [{"text": "x"}])
        assert refused.value.details == {"required": "write"}
        with pytest.raises(LorebaseError, match="the server answered 502") as failed:
            await backend.pipeline("p1")
        assert failed.value.status_code == 502
        await backend.aclose()

    anyio.run(main)
    assert seen[:3] == ["GET /api/v1/kbs/notes", "GET /api/v1/kbs", "GET /api/v1/kbs/elsewhere"]


def test_remote_read_only_refuses_writes_and_an_unreachable_server_is_named() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async def main() -> None:
        backend = RemoteBackend(
            "http://lorebase.test", "k", read_only=True, transport=httpx.MockTransport(unreachable)
        )
        with pytest.raises(Forbidden, match="--read-only"):
            await backend.add_documents("notes", [{"text": "x"}])
        with pytest.raises(LorebaseError, match="cannot be reached") as down:
            await backend.list_kbs(limit=1, offset=0)
        assert down.value.code == "unavailable"

    anyio.run(main)
