"""``LorebaseRetriever`` for LangChain: a lorebase KB as a ``langchain_core`` retriever.

    from lorebase.integrations.langchain import LorebaseRetriever

    retriever = LorebaseRetriever(kb="notes", top_k=4)      # LOREBASE_SERVER_URL, LOREBASE_API_KEY
    docs = retriever.invoke("where do bees dance?")
    docs[0].page_content, docs[0].metadata["score"], docs[0].metadata["external_id"]

Each hit is a ``Document`` whose ``id`` is the chunk id and whose metadata holds the score,
document id, external id, URL, title and the chunk's own metadata, in the API's order.
Needs ``pip install 'lorebase[langchain]'``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from lorebase.client import AsyncClient, Client
from lorebase.client.models import SearchResponse
from lorebase.integrations.common import KbSearch, Mode, async_client, hit_metadata, sync_client


class LorebaseRetriever(BaseRetriever):
    """Searches one lorebase KB. Pass ``client`` (or ``async_client``) to share a connection, or
    ``base_url`` / ``api_key`` (defaults: ``LOREBASE_SERVER_URL`` / ``LOREBASE_API_KEY``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: str = Field(description="The knowledge base's name or id.")
    top_k: int = Field(4, ge=1, le=100)
    mode: Mode = "hybrid"
    filters: dict[str, Any] | None = None
    base_url: str | None = None
    api_key: str | None = Field(None, repr=False)
    client: Client | None = Field(None, exclude=True, repr=False)
    async_client: AsyncClient | None = Field(None, exclude=True, repr=False)

    _search: KbSearch = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._search = KbSearch(self.kb, top_k=self.top_k, mode=self.mode, filters=self.filters)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.client = sync_client(self.client, self.async_client, self.base_url, self.api_key)
        return _documents(*self._search.run(self.client, query))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.async_client = async_client(self.async_client, self.client, self.base_url, self.api_key)
        return _documents(*await self._search.arun(self.async_client, query))


def _documents(kb_id: str, answer: SearchResponse) -> list[Document]:
    return [
        Document(id=hit.chunk_id, page_content=hit.text, metadata=hit_metadata(hit, answer, kb_id))
        for hit in answer.results
    ]


__all__ = ["LorebaseRetriever"]
