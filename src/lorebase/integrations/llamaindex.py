"""``LorebaseRetriever`` for LlamaIndex: a lorebase KB as a ``llama_index.core`` retriever.

    from lorebase.integrations.llamaindex import LorebaseRetriever

    retriever = LorebaseRetriever("notes", top_k=4)         # LOREBASE_SERVER_URL, LOREBASE_API_KEY
    for hit in retriever.retrieve("where do bees dance?"):
        hit.score, hit.node.node_id, hit.node.metadata["external_id"], hit.node.get_content()

Each hit is a ``NodeWithScore``: a ``TextNode`` whose id is the chunk id, whose source
(``node.ref_doc_id``) is the lorebase document, with the API's score and order. Nothing is
downloaded (no NLTK data, no tokenizer): the node carries the server's text as it is.
Needs ``pip install 'lorebase[llamaindex]'``.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode

from lorebase.client import AsyncClient, Client
from lorebase.client.models import SearchResponse
from lorebase.integrations.common import KbSearch, Mode, async_client, hit_metadata, sync_client


class LorebaseRetriever(BaseRetriever):
    """Searches one lorebase KB (``kb``: its name or id). Pass ``client`` / ``async_client`` to
    share a connection, or ``base_url`` / ``api_key`` (defaults: ``LOREBASE_SERVER_URL`` /
    ``LOREBASE_API_KEY``)."""

    def __init__(
        self,
        kb: str,
        *,
        top_k: int = 4,
        mode: Mode = "hybrid",
        filters: dict[str, Any] | None = None,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self._search = KbSearch(kb, top_k=top_k, mode=mode, filters=filters)
        self._client, self._async_client = client, async_client
        self._base_url, self._api_key = base_url, api_key

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self._client = sync_client(self._client, self._async_client, self._base_url, self._api_key)
        return _nodes(*self._search.run(self._client, query_bundle.query_str))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self._async_client = async_client(self._async_client, self._client, self._base_url, self._api_key)
        return _nodes(*await self._search.arun(self._async_client, query_bundle.query_str))


def _nodes(kb_id: str, answer: SearchResponse) -> list[NodeWithScore]:
    out = []
    for hit in answer.results:
        node = TextNode(
            id_=hit.chunk_id,
            text=hit.text,
            metadata=hit_metadata(hit, answer, kb_id),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.document_id)},
        )
        out.append(NodeWithScore(node=node, score=hit.score))
    return out


__all__ = ["LorebaseRetriever"]
