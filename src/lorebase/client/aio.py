"""``AsyncClient``: the lorebase HTTP API on asyncio, method for method the same as ``Client``.

    async with AsyncClient() as lb:   # LOREBASE_SERVER_URL, LOREBASE_API_KEY
        kb = await lb.find_kb("notes")
        found = await lb.search(kb.id, "where do bees dance?")

The calls themselves (paths, bodies, answers, retry safety) are ``calls.py``'s, shared with
``Client``; only the waiting differs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from lorebase.client import calls
from lorebase.client import models as m
from lorebase.client.base import (
    Config,
    EventCursor,
    idempotency_headers,
    raise_refusal,
    read_answer,
    request_args,
    stream_timeout,
    transport_failure,
)
from lorebase.client.errors import ConnectionFailed, NotFound
from lorebase.client.retry import RetryPolicy
from lorebase.client.sync import Action, Mode, looks_like_id

T = TypeVar("T")


class AsyncClient:
    """The asyncio twin of :class:`~lorebase.client.Client`: the same methods, awaited.
    ``base_url`` and ``api_key`` default to ``LOREBASE_SERVER_URL`` and ``LOREBASE_API_KEY``.
    ``transport`` is handed to httpx (e.g. ``httpx.AsyncHTTPTransport(retries=0, local_address=...)``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = Config.resolve(base_url, api_key, timeout, retry)
        self._http = httpx.AsyncClient(transport=transport, **self.config.httpx_options())

    def __repr__(self) -> str:
        return f"AsyncClient({self.config.base_url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def call(self, call: calls.Call[T]) -> T:
        """Send one call, with the retries its safety allows; its parsed answer, or raise."""
        policy, headers = self.config.retry, idempotency_headers(call)
        attempt, lost = 0, False
        while True:
            attempt += 1
            try:
                with request_args(call, headers) as args:
                    response = await self._http.request(**args)
            except httpx.TransportError as exc:
                outcome = transport_failure(call, exc, attempt, policy, self.config.base_url)
                lost = lost or not isinstance(exc, httpx.ConnectError)
            else:
                outcome = read_answer(call, response, attempt, policy, lost_answer=lost)
            if outcome.error is None:
                return outcome.value
            if not outcome.retry:
                raise outcome.error
            await asyncio.sleep(outcome.wait)

    # drafts

    async def create_draft(
        self, name: str, *, description: str | None = None, config: dict[str, Any] | None = None
    ) -> m.Draft:
        return await self.call(calls.create_draft(name, description, config))

    async def get_draft(self, draft_id: str) -> m.Draft:
        return await self.call(calls.get_draft(draft_id))

    async def patch_draft(
        self,
        draft_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> m.Draft:
        """``config`` is merged into the draft's."""
        return await self.call(calls.patch_draft(draft_id, name, description, config))

    async def delete_draft(self, draft_id: str) -> None:
        await self.call(calls.delete_draft(draft_id))

    async def add_web_source(
        self,
        draft_id: str,
        url: str,
        *,
        crawl: dict[str, Any] | None = None,
        refresh_every: str | None = None,
    ) -> list[m.DraftSource]:
        """A website crawled at finalize, and again every ``refresh_every`` (``"24h"``) if given."""
        return await self.call(calls.add_web(draft_id, url, crawl, refresh_every))

    async def add_text_source(
        self, draft_id: str, documents: Sequence[Mapping[str, Any]]
    ) -> list[m.DraftSource]:
        """``documents``: ``{text, external_id?, title?, metadata?}`` records."""
        return await self.call(calls.add_text(draft_id, documents))

    async def upload_files(
        self, draft_id: str, files: Sequence[str | Path], *, external_ids: Sequence[str] | None = None
    ) -> list[m.DraftSource]:
        """One source per file, streamed from disk in one multipart request. ``external_ids`` (one
        per file): a file sent again with the same id replaces its earlier version."""
        return await self.call(calls.add_files(draft_id, [Path(f) for f in files], external_ids))

    async def delete_source(self, draft_id: str, source_id: str) -> None:
        await self.call(calls.delete_source(draft_id, source_id))

    async def preview(self, draft_id: str, *, source_id: str | None = None, limit: int = 10) -> m.Preview:
        return await self.call(calls.preview(draft_id, source_id, limit))

    async def validate(self, draft_id: str) -> m.Validation:
        return await self.call(calls.validate(draft_id))

    async def finalize(self, draft_id: str, *, not_before: datetime | None = None) -> m.Finalized:
        """The KB is created now; with ``not_before`` (timezone-aware) its work starts then."""
        return await self.call(calls.finalize(draft_id, not_before))

    # knowledge bases

    async def list_kbs(self, *, limit: int = 100, offset: int = 0) -> m.Page[m.KnowledgeBase]:
        return await self.call(calls.list_kbs(limit, offset))

    async def iter_kbs(self) -> AsyncIterator[m.KnowledgeBase]:
        """Every KB of the workspace, newest first, page by page."""
        offset = 0
        while True:
            batch = (await self.list_kbs(limit=1000, offset=offset)).items
            for kb in batch:
                yield kb
            if len(batch) < 1000:
                return
            offset += len(batch)

    async def get_kb(self, kb_id: str) -> m.KnowledgeBase:
        return await self.call(calls.get_kb(kb_id))

    async def find_kb(self, name_or_id: str) -> m.KnowledgeBase:
        """A KB by id, or by name (the newest of that name); :class:`NotFound` when neither."""
        if looks_like_id(name_or_id):
            try:
                return await self.get_kb(name_or_id)
            except NotFound:
                pass  # a name that looks like an id
        async for kb in self.iter_kbs():
            if kb.name == name_or_id:
                return kb
        raise NotFound(f"no knowledge base named {name_or_id!r} in this workspace", status=404)

    async def patch_kb(self, kb_id: str, **fields: Any) -> m.KbChange:
        """``name``, ``description``, ``config``, ``activate``, ``evaluation`` (``PATCH /kbs/{id}``)."""
        return await self.call(calls.patch_kb(kb_id, **fields))

    async def delete_kb(self, kb_id: str) -> None:
        await self.call(calls.delete_kb(kb_id))

    async def add_documents(
        self, kb_id: str, documents: Sequence[Mapping[str, Any]], *, not_before: datetime | None = None
    ) -> m.DocumentsAdded:
        return await self.call(calls.add_documents(kb_id, documents, not_before))

    async def upload_documents(
        self, kb_id: str, files: Sequence[str | Path], *, external_ids: Sequence[str] | None = None
    ) -> m.DocumentsAdded:
        """Files added to a KB (a pipeline); with ``external_ids``, as :meth:`upload_files`."""
        return await self.call(calls.upload_documents(kb_id, [Path(f) for f in files], external_ids))

    async def add_source(
        self,
        kb_id: str,
        url: str,
        *,
        crawl: dict[str, Any] | None = None,
        not_before: datetime | None = None,
        refresh_every: str | None = None,
    ) -> m.SourceAdded:
        """A web source crawled into the KB (from ``not_before``; again every ``refresh_every``,
        e.g. ``"24h"``)."""
        return await self.call(calls.add_source(kb_id, url, crawl, not_before, refresh_every))

    async def list_sources(self, kb_id: str) -> m.Page[m.WebSourceInfo]:
        """The KB's web sources, with ``refresh_every`` and ``next_refresh_at``."""
        return await self.call(calls.list_sources(kb_id))

    async def refresh(self, kb_id: str, *, not_before: datetime | None = None) -> m.PipelineStarted:
        return await self.call(calls.refresh(kb_id, not_before))

    async def list_versions(self, kb_id: str) -> m.Page[m.KbVersion]:
        return await self.call(calls.list_versions(kb_id))

    async def activate_version(self, kb_id: str, version: int) -> m.KbVersion:
        return await self.call(calls.activate_version(kb_id, version))

    # documents, search, feedback

    async def list_documents(
        self, kb_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> m.Page[m.Document]:
        return await self.call(calls.list_documents(kb_id, status, limit, offset))

    async def get_document(self, document_id: str) -> m.Document:
        return await self.call(calls.get_document(document_id))

    async def list_chunks(self, document_id: str, *, limit: int = 1000, offset: int = 0) -> m.Page[m.Chunk]:
        return await self.call(calls.list_chunks(document_id, limit, offset))

    async def search(
        self,
        kb_id: str,
        query: str,
        *,
        top_k: int = 10,
        mode: Mode = "hybrid",
        filters: dict[str, Any] | None = None,
        version: int | None = None,
    ) -> m.SearchResponse:
        return await self.call(
            calls.search(kb_id, query=query, top_k=top_k, mode=mode, filters=filters, version=version)
        )

    async def feedback(
        self,
        query_id: str,
        feedback: Literal["positive", "negative", "neutral"],
        *,
        comment: str | None = None,
    ) -> m.Feedback:
        return await self.call(calls.feedback(query_id, feedback, comment))

    # pipelines

    async def get_pipeline(self, pipeline_id: str) -> m.Pipeline:
        return await self.call(calls.get_pipeline(pipeline_id))

    async def control_pipeline(self, pipeline_id: str, action: Action) -> m.Pipeline:
        """``cancel``, ``pause``, ``resume`` or ``retry`` (its failed documents)."""
        return await self.call(calls.control_pipeline(pipeline_id, action))

    async def events(self, pipeline_id: str, *, after: int = 0) -> AsyncIterator[m.Event]:
        """The pipeline's events (``pipeline``, ``document``, ``end``) as they happen, each once.

        A dropped connection is reopened with ``Last-Event-ID``, so the server resumes after the
        last event seen; the iterator ends after ``end`` (or at once when the pipeline was over
        before ``after``)."""
        cursor, policy = EventCursor(seen=after), self.config.retry
        while True:
            try:
                async with self._http.stream(
                    "GET",
                    calls.events_path(pipeline_id),
                    headers=cursor.headers(),
                    timeout=stream_timeout(self.config),
                ) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code >= 300:
                        await response.aread()
                        raise_refusal(response, cursor, policy)
                    else:
                        async for line in response.aiter_lines():
                            event = cursor.feed(line)
                            if event is not None:
                                yield event
                                if event.event == "end":
                                    return
            except httpx.TransportError as exc:
                if cursor.failures + 1 >= policy.attempts:
                    raise ConnectionFailed(
                        f"the event stream of pipeline {pipeline_id} broke: {exc}"
                    ) from None
            cursor.failures += 1  # dropped, or ended without its end event: resume
            cursor.reconnect()
            await asyncio.sleep(cursor.delay(policy))

    async def wait(self, pipeline_id: str, *, on_event: Callable[[m.Event], Any] | None = None) -> m.Pipeline:
        """Follow the pipeline's events to its end; its final state."""
        async for event in self.events(pipeline_id):
            if on_event is not None and inspect.isawaitable(result := on_event(event)):
                await result
        return await self.get_pipeline(pipeline_id)

    # jobs, queue, keys, evaluations

    async def list_jobs(
        self, *, status: str | None = None, kb_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> m.Page[m.Job]:
        return await self.call(calls.list_jobs(status, kb_id, limit, offset))

    async def retry_job(self, job_id: str) -> m.Job:
        return await self.call(calls.retry_job(job_id))

    async def queue(self) -> m.QueueStats:
        return await self.call(calls.queue())

    async def get_workspace(self) -> m.WorkspaceInfo:
        """The key's workspace: its tier (priority, worker pool) and retention."""
        return await self.call(calls.get_workspace())

    async def patch_workspace(self, **fields: Any) -> m.WorkspaceInfo:
        """``priority``, ``pool`` (None: the default workers), ``retention`` (admin scope)."""
        return await self.call(calls.patch_workspace(**fields))

    async def list_keys(self) -> m.Page[m.ApiKey]:
        return await self.call(calls.list_keys())

    async def create_key(
        self, *, name: str = "", scopes: Sequence[str] = ("read",), expires_at: datetime | None = None
    ) -> m.ApiKey:
        """A new key of this workspace (admin scope); its secret is in ``.key``, shown once."""
        return await self.call(calls.create_key(name, scopes, expires_at))

    async def revoke_key(self, key_id: str) -> None:
        await self.call(calls.revoke_key(key_id))

    async def create_evaluation(self, kb_id: str, **fields: Any) -> m.EvaluationStarted:
        """``queries`` + ``qrels``, or ``from_feedback=True``; ``versions``, ``modes``."""
        return await self.call(calls.create_evaluation(kb_id, **fields))

    async def get_evaluation(self, evaluation_id: str) -> m.Evaluation:
        return await self.call(calls.get_evaluation(evaluation_id))

    async def wait_evaluation(self, evaluation_id: str, *, interval: float = 0.5) -> m.Evaluation:
        """Poll until the evaluation has ended (it runs as a job)."""
        while (found := await self.get_evaluation(evaluation_id)).status in ("pending", "running", "queued"):
            await asyncio.sleep(interval)
        return found


__all__ = ["AsyncClient"]
