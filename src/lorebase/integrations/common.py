"""What both retrievers share: the search they run and the metadata each hit carries."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from lorebase.client import AsyncClient, Client
from lorebase.client.models import SearchResponse, SearchResult

Mode = Literal["hybrid", "vector", "keyword"]


def hit_metadata(hit: SearchResult, answer: SearchResponse, kb_id: str) -> dict[str, Any]:
    """The chunk's own metadata (section, page, type, the document's metadata) with the hit's
    ``score`` and where it comes from: KB, document, external id, URL, title, file name."""
    return {
        **hit.metadata,
        "score": hit.score,
        "chunk_id": hit.chunk_id,
        "document_id": hit.document_id,
        "external_id": hit.external_id,
        "title": hit.title,
        "url": hit.url,
        "filename": hit.filename,
        "section": list(hit.section),
        "kb_id": kb_id,
        "version": answer.version,
        "query_id": answer.query_id,
    }


def sync_client(
    client: Client | None, other: AsyncClient | None, base_url: str | None, api_key: str | None
) -> Client:
    """The retriever's ``Client``: the one given, or one to the server of the async one given,
    or of ``base_url`` / ``api_key`` (the environment's by default)."""
    return client if client is not None else _made(Client, other, base_url, api_key)


def async_client(
    client: AsyncClient | None, other: Client | None, base_url: str | None, api_key: str | None
) -> AsyncClient:
    """As :func:`sync_client`, for the async paths."""
    return client if client is not None else _made(AsyncClient, other, base_url, api_key)


C = TypeVar("C", Client, AsyncClient)


def _made(cls: type[C], other: Client | AsyncClient | None, base_url: str | None, api_key: str | None) -> C:
    """A new client of ``cls``: to the server of ``other`` with its settings, else of ``base_url``."""
    if other is None:
        return cls(base_url, api_key)
    config = other.config
    return cls(config.base_url, config.api_key, timeout=config.timeout, retry=config.retry)


class KbSearch:
    """A KB (by name or id, resolved once) and the search options of one retriever."""

    def __init__(self, kb: str, *, top_k: int, mode: Mode, filters: dict[str, Any] | None) -> None:
        self.kb, self.top_k, self.mode, self.filters = kb, top_k, mode, filters
        self._kb_id: str | None = None

    def run(self, client: Client, query: str) -> tuple[str, SearchResponse]:
        if self._kb_id is None:
            self._kb_id = client.find_kb(self.kb).id
        found = client.search(self._kb_id, query, top_k=self.top_k, mode=self.mode, filters=self.filters)
        return self._kb_id, found

    async def arun(self, client: AsyncClient, query: str) -> tuple[str, SearchResponse]:
        if self._kb_id is None:
            self._kb_id = (await client.find_kb(self.kb)).id
        found = await client.search(
            self._kb_id, query, top_k=self.top_k, mode=self.mode, filters=self.filters
        )
        return self._kb_id, found
