"""The MCP server: lorebase's tools and resources, on the official ``mcp`` SDK (``MCPServer``).

One definition serves every transport: :func:`build_server` takes ``backend_of``, which gives
the :class:`~lorebase.mcp.backend.Backend` of the request at hand (on ``POST /mcp`` a
``LocalBackend`` as the caller's key, ``http.py``; on stdio one fixed backend, ``stdio.py``).

A refused call is an MCP tool error (``isError``) whose text is the API's message: "knowledge
base … not found" (other workspaces' ids included), "this API key has scope(s) read;
add_documents needs 'write'", or for arguments that fail the input schema "the request is not
valid" with the field and the reason, as a 422 of the REST API says them. Anything unexpected is
logged and answered "Error executing tool <name>" (by the SDK), never with a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import Field, ValidationError

from lorebase import __version__
from lorebase.api.schemas.requests import TextRecord
from lorebase.errors import LorebaseError
from lorebase.mcp.backend import Backend

T = TypeVar("T")
BackendOf = Callable[[Context], Backend]

INSTRUCTIONS = """\
lorebase holds knowledge bases (KBs): documents split into chunks, searchable by meaning and by \
keywords. Start with list_knowledge_bases, then search a KB by its name or id; each result \
carries its chunk text, document id, title and URL. get_document reads a whole document chunk \
by chunk. With a write key, add_documents adds text records to a KB and returns a pipeline id; \
pipeline_status follows it until it is completed."""

KbRef = Annotated[str, Field(min_length=1, max_length=500, description="The KB's name or id.")]
READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


class ApiError(ToolError):
    """A refusal of the API (not found, forbidden, invalid), told in its own words."""


class LorebaseMCP(MCPServer):
    """The SDK's server, whose tool errors read as the REST API's: the SDK prefixes every tool
    error with "Error executing tool <name>: " and gives a failed input schema as pydantic's
    report; here both become the API's message."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # a crash: the SDK logs it and answers without details
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiError):
                raise ApiError(str(cause)) from cause
            if isinstance(cause, ValidationError):
                raise ApiError(invalid_text(cause)) from cause
            raise


def invalid_text(exc: ValidationError) -> str:
    """As the API's 422: "the request is not valid", then each field and what is wrong."""
    fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return f"the request is not valid: {fields}"


def error_text(exc: LorebaseError) -> str:
    """The API's message, and for invalid input the details that say which field and why."""
    if exc.details and exc.code in ("invalid_input", "bad_request"):
        return f"{exc.message}: {json.dumps(exc.details, default=str)}"
    return exc.message


async def guarded(call: Awaitable[T]) -> T:
    """A tool's work, the API's errors turned into tool errors (``isError``) with the API's
    message (``LorebaseMCP.call_tool`` unwraps them). Anything else is a crash the SDK logs and
    answers "Error executing tool <name>" alone: no internals leak."""
    try:
        return await call
    except LorebaseError as exc:
        raise ApiError(error_text(exc)) from None


@contextmanager
def logging_left_alone() -> Iterator[None]:
    """``MCPServer()`` calls ``logging.basicConfig`` (a Rich handler on the root logger): a no-op
    once the process has configured its logging, as every ``lorebase`` command does first, but
    an app built before that (a benchmark, a script) would have its root logger taken over. A
    placeholder handler keeps ``basicConfig`` from doing anything meanwhile."""
    root = logging.getLogger()
    placeholder = None if root.handlers else logging.NullHandler()
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        if placeholder is not None:
            root.removeHandler(placeholder)


def build_server(backend_of: BackendOf) -> LorebaseMCP:
    with logging_left_alone():
        server = LorebaseMCP("lorebase", version=__version__, instructions=INSTRUCTIONS)

    @server.tool(annotations=READ_ONLY)
    async def list_knowledge_bases(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=1000, description="How many KBs at most.")] = 100,
        offset: Annotated[int, Field(ge=0, description="How many to skip (paging).")] = 0,
    ) -> dict[str, Any]:
        """List the knowledge bases this key can see, newest first: id, name, description, status
        (processing, ready, failed), counts of documents, indexed documents and chunks, and the
        config (chunking, embedding model). Returns {items, total}."""
        return await guarded(backend_of(ctx).list_kbs(limit=limit, offset=offset))

    @server.tool(annotations=READ_ONLY)
    async def search(
        ctx: Context,
        kb: KbRef,
        query: Annotated[str, Field(min_length=1, max_length=4000, description="What to look for.")],
        top_k: Annotated[int, Field(ge=1, le=100, description="How many chunks to return.")] = 10,
        mode: Annotated[
            Literal["hybrid", "vector", "keyword"],
            Field(
                description="hybrid (default: meaning and keywords fused), vector (meaning only) "
                "or keyword (BM25 over the words)."
            ),
        ] = "hybrid",
        filters: Annotated[
            dict[str, Any] | None,
            Field(
                description="Only chunks whose document matches every key: document fields "
                "(document_id, external_id, source_type, filename, media_type), document metadata "
                "keys (a bare key or metadata.<key>), or the chunk's type (text, table, code, "
                'ocr). A list value means any of, e.g. {"external_id": ["a", "b"]}.'
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Search one knowledge base; the best chunks first. Each result has chunk_id,
        document_id, external_id, title, url, section (heading path), text, score and metadata.
        Returns {query_id, version, results} as the REST API's search does."""
        return await guarded(backend_of(ctx).search(kb, query, mode=mode, top_k=top_k, filters=filters))

    @server.tool(annotations=READ_ONLY)
    async def get_document(
        ctx: Context,
        document_id: Annotated[str, Field(min_length=1, max_length=100, description="The document's id.")],
        max_chunks: Annotated[
            int, Field(ge=0, le=1000, description="How many of its chunks to include, in order.")
        ] = 200,
    ) -> dict[str, Any]:
        """Read one document (as search results name it by document_id): title, source, status,
        metadata, and its chunks in order (chunk_index, text, metadata). chunks_total says how
        many it has in all."""
        backend = backend_of(ctx)

        async def run() -> dict[str, Any]:
            document = await backend.get_document(document_id)
            chunks: dict[str, Any] = {"items": [], "total": document.get("chunk_count") or 0}
            if max_chunks:
                chunks = await backend.list_chunks(document_id, limit=max_chunks)
            return {**document, "chunks": chunks["items"], "chunks_total": chunks["total"]}

        return await guarded(run())

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False))
    async def add_documents(
        ctx: Context,
        kb: KbRef,
        documents: Annotated[
            list[TextRecord],
            Field(
                min_length=1,
                max_length=10_000,
                description="Text records: {text, title?, external_id?, metadata?}. A record "
                "whose external_id the KB already has replaces that document (unchanged text is "
                "not processed again).",
            ),
        ],
    ) -> dict[str, Any]:
        """Add text documents to a knowledge base (needs a key with the write scope). They are
        chunked, embedded and indexed in the background: the answer's pipeline_id is for
        pipeline_status. Returns {pipeline_id, documents}."""
        records = [r.model_dump() for r in documents]
        return await guarded(backend_of(ctx).add_documents(kb, records))

    @server.tool(annotations=READ_ONLY)
    async def pipeline_status(
        ctx: Context,
        pipeline_id: Annotated[str, Field(min_length=1, max_length=100, description="From add_documents.")],
    ) -> dict[str, Any]:
        """The progress of a pipeline: status (queued, running, paused, completed,
        completed_with_errors, failed, cancelled), phase, progress 0-100, counts (documents done
        and failed, chunks embedded and indexed), message, error and eta_seconds."""
        return await guarded(backend_of(ctx).pipeline(pipeline_id))

    @server.resource(
        "lorebase://kbs/{kb_id}",
        name="knowledge_base",
        description="A knowledge base as JSON (by id or name): config, status and counts.",
        mime_type="application/json",
    )
    async def kb_resource(kb_id: str, ctx: Context) -> str:
        return json.dumps(await _resource(backend_of(ctx).find_kb(kb_id)))

    @server.resource(
        "lorebase://documents/{document_id}",
        name="document",
        description="A document as text: its title, then its chunks in order.",
        mime_type="text/markdown",
    )
    async def document_resource(document_id: str, ctx: Context) -> str:
        backend = backend_of(ctx)
        document = await _resource(backend.get_document(document_id))
        chunks = await _resource(backend.list_chunks(document_id, limit=1000))
        title = document.get("title") or document.get("filename") or document_id
        return "\n\n".join([f"# {title}", *(c["text"] for c in chunks["items"])])

    return server


async def _resource(call: Awaitable[T]) -> T:
    try:
        return await call
    except LorebaseError as exc:
        raise ResourceError(error_text(exc)) from None
