"""The MCP server (``src/lorebase/mcp``) through the MCP SDK's own client, against real
processes: Streamable HTTP at ``POST /mcp`` of a ``lorebase serve``, and stdio from a ``lorebase
mcp`` on the same data dir (local mode) or pointed at the server (remote mode). The README's two
config snippets are run as written (the data dir, URL and key filled in).

One server and one small KB for the module; what a test adds it adds under its own names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from support import testdb
from support.cluster import free_port
from support.live import serve_process
from support.waiting import wait_for

T = TypeVar("T")
README = Path(__file__).parents[2] / "README.md"
TOOLS = {"search", "list_knowledge_bases", "get_document", "add_documents", "pipeline_status"}
DOCS = [
    {"external_id": "tides", "title": "Tides", "text": "The moon's pull raises the ocean tides twice a day."},
    {"external_id": "bees", "title": "Bees", "text": "Honey bees dance to tell the hive where flowers are."},
    {"external_id": "rust", "title": "Rust", "text": "Iron rusts when oxygen and water meet its surface."},
    {"external_id": "stars", "title": "Stars", "text": "A star shines by fusing hydrogen into helium."},
]
NEEDS_WRITE = "needs 'write'"


@dataclass
class Env:
    url: str
    data_dir: Path
    kb_id: str
    keys: dict[str, str]  # admin, read, write (the KB's workspace) and other (a second workspace)
    rest: httpx.Client  # as the admin key

    def rest_search(self, query: str, mode: str, top_k: int) -> list[str]:
        body = {"query": query, "mode": mode, "top_k": top_k}
        r = self.rest.post(f"/api/v1/kbs/{self.kb_id}/search", json=body)
        assert r.status_code == 200, r.text
        return [hit["chunk_id"] for hit in r.json()["results"]]

    def environ(self, **extra: str) -> dict[str, str]:
        """What a ``lorebase`` subprocess needs besides the README's env: this checkout's code,
        and the test database (PostgreSQL runs)."""
        env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        if url := testdb.database_url_for(self.data_dir):
            env["LOREBASE_DATABASE_URL"] = url
        return env


def readme_configs() -> list[dict[str, Any]]:
    """The ``mcpServers.lorebase`` entries of the README's MCP section, in order."""
    section = README.read_text().split("## MCP: search your KBs from agents", 1)[1].split("\n## ", 1)[0]
    return [
        json.loads(block)["mcpServers"]["lorebase"]
        for block in re.findall(r"```json\n(.*?)```", section, re.S)
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("mcp")
    # the workers beside the API in its process: one load of the model for the KB and the searches
    with serve_process(tmp, workers=1, LOREBASE_JOBS__SERVE_WORKER_PROCESS="false") as served:
        url = f"http://127.0.0.1:{served.port}"
        headers = {"Authorization": f"Bearer {served.key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as rest:
            draft = rest.post("/api/v1/kb-drafts", json={"name": "science"}).json()["id"]
            r = rest.post(f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": DOCS})
            assert r.status_code < 300, r.text
            finalized = rest.post(f"/api/v1/kb-drafts/{draft}/finalize").json()
            keys = {"admin": served.key}
            e = Env(url, tmp / "data", finalized["kb_id"], keys, rest)
            other = subprocess.Popen(  # a key of a second workspace, while the KB builds
                [sys.executable, "-m", "lorebase.cli.main", "keys", "create", "--workspace", "other"],
                env={**os.environ, "LOREBASE_DATA_DIR": str(e.data_dir), **e.environ()},
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for scope in ("read", "write"):
                r = rest.post("/api/v1/keys", json={"name": scope, "scopes": [scope]})
                assert r.status_code == 201, r.text
                keys[scope] = r.json()["key"]
            pipeline = f"/api/v1/pipelines/{finalized['pipeline_id']}"
            wait_for(lambda: rest.get(pipeline).json()["status"] == "completed", 120, "the KB")
            keys["other"] = other.communicate(timeout=60)[0].strip()
            assert other.returncode == 0 and keys["other"].startswith("lb_")
            yield e


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn)


def http_client(e: Env, key: str) -> Client:
    """The README's HTTP snippet, pointed at this server with ``key``."""
    config = readme_configs()[1]
    url = config["url"].replace("http://127.0.0.1:8000", e.url)
    headers = {k: v.replace("lb_your_key", key) for k, v in config["headers"].items()}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=60)))


def stdio_client(e: Env, *args: str, **env: str) -> Client:
    """The README's stdio snippet as written (its data dir this server's), ``args`` added."""
    config = readme_configs()[0]
    command = shutil.which(config["command"]) or str(Path(sys.executable).with_name(config["command"]))
    readme_env = {k: str(e.data_dir) if k == "LOREBASE_DATA_DIR" else v for k, v in config["env"].items()}
    params = StdioServerParameters(
        command=command, args=[*config["args"], *args], env={**readme_env, **e.environ(**env)}
    )
    return Client(params)


@asynccontextmanager
async def connected(client: Client) -> AsyncIterator[Client]:
    with anyio.fail_after(120):
        async with client:
            yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult) and result.is_error, result
    return text_of(result)


def text_of(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def same_search_as_rest(client: Client, e: Env, query: str, *, mode: str, top_k: int, kb: str) -> None:
    found = await call(client, "search", kb=kb, query=query, mode=mode, top_k=top_k)
    ids = [hit["chunk_id"] for hit in found["results"]]
    assert ids and ids == e.rest_search(query, mode, top_k), (mode, found)


async def add_and_follow(client: Client, kb: str, external_id: str, text: str) -> None:
    added = await call(client, "add_documents", kb=kb, documents=[{"external_id": external_id, "text": text}])
    with anyio.fail_after(90):
        while (state := await call(client, "pipeline_status", pipeline_id=added["pipeline_id"]))[
            "status"
        ] not in (
            "completed",
            "completed_with_errors",
            "failed",
        ):
            await anyio.sleep(0.3)
    assert state["status"] == "completed", state
    hits = await call(client, "search", kb=kb, query=text, mode="keyword", top_k=3)
    assert hits["results"][0]["external_id"] == external_id


# -- Streamable HTTP at POST /mcp ---------------------------------------------------------------


def test_http_lists_the_tools_and_searches_as_the_rest_api(env: Env) -> None:
    async def main() -> None:
        async with connected(http_client(env, env.keys["read"])) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            assert all(t.description for t in tools.values())
            search = tools["search"].input_schema
            assert set(search["properties"]) == {"kb", "query", "top_k", "mode", "filters"}
            assert set(search["required"]) == {"kb", "query"}
            for mode in ("hybrid", "vector", "keyword"):  # by name and by id
                await same_search_as_rest(
                    client, env, "why do ocean tides rise", mode=mode, top_k=3, kb="science"
                )
            await same_search_as_rest(client, env, "flowers and honey", mode="hybrid", top_k=2, kb=env.kb_id)
            listed = await call(client, "list_knowledge_bases")
            assert [kb["id"] for kb in listed["items"]] == [env.kb_id]
            invalid = await refused(client, "search", kb="science", query="tides", mode="fuzzy")
            assert invalid.startswith("the request is not valid: mode: ")

    run(main)


def test_http_without_a_valid_key_answers_401_as_the_rest_api(env: Env) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for headers in ({}, {"Authorization": "Bearer lb_not_a_key"}):
        r = httpx.post(f"{env.url}/mcp", json=hello, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthorized"


def test_http_a_read_key_cannot_add_documents_a_write_key_can(env: Env) -> None:
    async def main() -> None:
        async with connected(http_client(env, env.keys["read"])) as client:
            message = await refused(client, "add_documents", kb="science", documents=[{"text": "no"}])
            assert NEEDS_WRITE in message and "scope(s) read" in message
        async with connected(http_client(env, env.keys["write"])) as client:
            await add_and_follow(client, "science", "http-volcano", "Volcanoes erupt molten basalt lava.")

    run(main)


def test_http_another_workspace_finds_nothing(env: Env) -> None:
    async def main() -> None:
        document_id = env.rest.get(f"/api/v1/kbs/{env.kb_id}/documents").json()["items"][0]["id"]
        async with connected(http_client(env, env.keys["other"])) as client:
            assert (await call(client, "list_knowledge_bases"))["total"] == 0
            for kb in (env.kb_id, "science"):
                assert (
                    await refused(client, "search", kb=kb, query="tides") == f"knowledge base {kb} not found"
                )
            assert "not found" in await refused(client, "get_document", document_id=document_id)
            assert "not found" in await refused(
                client, "add_documents", kb=env.kb_id, documents=[{"text": "x"}]
            )

    run(main)


def test_http_get_document_returns_it_with_its_chunks(env: Env) -> None:
    async def main() -> None:
        async with connected(http_client(env, env.keys["read"])) as client:
            hit = (await call(client, "search", kb="science", query="honey bees", mode="keyword", top_k=1))[
                "results"
            ][0]
            document = await call(client, "get_document", document_id=hit["document_id"])
            chunks = env.rest.get(f"/api/v1/documents/{hit['document_id']}/chunks").json()["items"]
            assert document["title"] == "Bees" and document["status"] == "indexed"
            assert [c["id"] for c in document["chunks"]] == [c["id"] for c in chunks]
            assert hit["chunk_id"] in [c["id"] for c in document["chunks"]]
            assert document["chunks_total"] == len(chunks)
            kb = await client.read_resource("lorebase://kbs/science")
            assert json.loads(kb.contents[0].text)["id"] == env.kb_id  # type: ignore[union-attr]
            read = await client.read_resource(f"lorebase://documents/{hit['document_id']}")
            assert "# Bees" in read.contents[0].text and "dance" in read.contents[0].text  # type: ignore[union-attr]

    run(main)


# -- stdio: lorebase mcp --------------------------------------------------------------------------


def test_stdio_local_as_in_the_readme(env: Env) -> None:
    """The README's snippet: the owner of the data dir, every scope in the default workspace."""

    async def main() -> None:
        async with connected(stdio_client(env)) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            await same_search_as_rest(
                client, env, "why do ocean tides rise", mode="hybrid", top_k=3, kb="science"
            )
            hit = (await call(client, "search", kb="science", query="hydrogen", mode="keyword", top_k=1))[
                "results"
            ][0]
            document = await call(client, "get_document", document_id=hit["document_id"])
            assert document["title"] == "Stars" and document["chunks"][0]["text"] == hit["text"]
            await add_and_follow(client, "science", "stdio-glacier", "Glaciers carve fjords from granite.")

    run(main)


def test_stdio_local_another_workspace_read_only(env: Env) -> None:
    async def main() -> None:
        async with connected(stdio_client(env, "--workspace", "other", "--read-only")) as client:
            assert "not found" in await refused(client, "search", kb=env.kb_id, query="tides")
            message = await refused(client, "add_documents", kb="science", documents=[{"text": "no"}])
            assert NEEDS_WRITE in message

    run(main)


def test_stdio_remote_talks_to_the_server_with_the_keys_scopes(env: Env) -> None:
    async def main() -> None:
        remote = {"LOREBASE_SERVER_URL": env.url, "LOREBASE_API_KEY": env.keys["read"]}
        async with connected(stdio_client(env, **remote)) as client:
            await same_search_as_rest(
                client, env, "why do ocean tides rise", mode="hybrid", top_k=3, kb="science"
            )
            hit = (await call(client, "search", kb=env.kb_id, query="oxygen", mode="keyword", top_k=1))[
                "results"
            ][0]
            document = await call(client, "get_document", document_id=hit["document_id"])
            assert document["title"] == "Rust" and document["chunks"]
            message = await refused(client, "add_documents", kb="science", documents=[{"text": "no"}])
            # the server's own words, naming the REST route
            assert f"scope(s) read; POST /api/v1/kbs/{{kb_id}}/documents {NEEDS_WRITE}" in message
        # a server that is down is named in the tool's error, not a stack trace
        down = {"LOREBASE_SERVER_URL": f"http://127.0.0.1:{free_port()}", "LOREBASE_API_KEY": "lb_k"}
        async with connected(stdio_client(env, **down)) as client:
            message = await refused(client, "list_knowledge_bases")
            assert "cannot be reached" in message and "Traceback" not in message, message

    run(main)
