"""The LangChain and LlamaIndex retrievers, with the real frameworks, against the live server:
each returns the API's own top k for a query (same chunks, same order, same scores) with the
document id, external id, URL, title and metadata of each hit."""

from __future__ import annotations

import asyncio
import sys

import pytest

from lorebase.client import Client

from .conftest import Remote

QUERY = "which insects tell each other where flowers are"


def _api_top(remote: Remote, k: int, **options: object) -> list[tuple[str, object, str | None]]:
    """``POST /search``'s answer; scores to 1e-5 (two runs of the model differ in the 7th digit)."""
    with remote.client() as lb:
        found = lb.search(remote.kb_id, QUERY, top_k=k, **options)  # type: ignore[arg-type]
    return [(r.chunk_id, pytest.approx(r.score, abs=1e-5), r.external_id) for r in found.results]


def test_langchain_retriever_returns_the_api_top_k(remote: Remote) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from lorebase.integrations.langchain import LorebaseRetriever

    retriever = LorebaseRetriever(kb=remote.kb_name, top_k=3, base_url=remote.url, api_key=remote.key)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke(QUERY)
    assert all(isinstance(d, Document) for d in docs)
    assert [(d.id, d.metadata["score"], d.metadata["external_id"]) for d in docs] == _api_top(remote, 3)
    bees = docs[0]
    assert bees.metadata["external_id"] == "bees" and bees.metadata["title"] == "Honeybees"
    assert bees.metadata["topic"] == "insects" and bees.metadata["kb_id"] == remote.kb_id
    assert bees.metadata["document_id"] and "waggle dance" in bees.page_content

    by_id = LorebaseRetriever(kb=remote.kb_id, top_k=2, mode="keyword", client=Client(remote.url, remote.key))
    keyword = asyncio.run(by_id.ainvoke(QUERY))  # the async path, on the AsyncClient
    assert [(d.id, d.metadata["score"], d.metadata["external_id"]) for d in keyword] == _api_top(
        remote, 2, mode="keyword"
    )


def test_llamaindex_retriever_returns_the_api_top_k_and_downloads_nothing(remote: Remote) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore

    from lorebase.integrations.llamaindex import LorebaseRetriever

    retriever = LorebaseRetriever(
        remote.kb_name, top_k=3, filters={"topic": "insects"}, base_url=remote.url, api_key=remote.key
    )
    assert isinstance(retriever, BaseRetriever)
    hits = retriever.retrieve(QUERY)
    assert all(isinstance(h, NodeWithScore) for h in hits)
    expected = _api_top(remote, 3, filters={"topic": "insects"})
    assert [(h.node.node_id, h.score, h.node.metadata["external_id"]) for h in hits] == expected
    assert {h.node.metadata["topic"] for h in hits} == {"insects"}
    assert hits[0].node.ref_doc_id == hits[0].node.metadata["document_id"]
    assert "waggle dance" in hits[0].node.get_content()
    again = asyncio.run(retriever.aretrieve(QUERY))
    assert [h.node.node_id for h in again] == [h.node.node_id for h in hits]
    assert "nltk" not in sys.modules  # nothing that would fetch NLTK data at run time
