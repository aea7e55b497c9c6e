"""``Client``: the lorebase HTTP API from Python, blocking (``AsyncClient`` is the same on asyncio).

    from lorebase.client import Client

    with Client("http://127.0.0.1:8000", api_key="lb_...") as lb:
        kb = lb.find_kb("notes")
        for hit in lb.search(kb.id, "where do bees dance?", top_k=3).results:
            print(hit.score, hit.title, hit.text[:80])

Every method is one call of DESIGN.md §7 (its path, body and answer are in ``calls.py``); an error
answer is raised as a typed :class:`~lorebase.client.errors.LorebaseError`; calls that are safe
to send again are retried (``retry.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from lorebase.client.errors import ConnectionFailed, LorebaseError, NotFound
from lorebase.client.retry import RetryPolicy

T = TypeVar("T")
Mode = Literal["hybrid", "vector", "keyword"]
Action = Literal["cancel", "pause", "resume", "retry"]


class Client:
    """``base_url`` and ``api_key`` default to ``LOREBASE_SERVER_URL`` and ``LOREBASE_API_KEY``.
    ``transport`` is handed to httpx (e.g. ``httpx.HTTPTransport(retries=0, local_address=...)``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = Config.resolve(base_url, api_key, timeout, retry)
        self._http = httpx.Client(transport=transport, **self.config.httpx_options())

    def __repr__(self) -> str:
        return f"Client({self.config.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def call(self, call: calls.Call[T]) -> T:
        """Send one call, with the retries its safety allows; its parsed answer, or raise."""
        policy, headers = self.config.retry, idempotency_headers(call)
        attempt, lost = 0, False
        while True:
            attempt += 1
            try:
                with request_args(call, headers) as args:
                    response = self._http.request(**args)
            except httpx.TransportError as exc:
                outcome = transport_failure(call, exc, attempt, policy, self.config.base_url)
                lost = lost or not isinstance(exc, httpx.ConnectError)
            else:
                outcome = read_answer(call, response, attempt, policy, lost_answer=lost)
            if outcome.error is None:
                return outcome.value
            if not outcome.retry:
                raise outcome.error
            time.sleep(outcome.wait)

    # drafts

    def create_draft(
        self, name: str, *, description: str | None = None, config: dict[str, Any] | None = None
    ) -> m.Draft:
        return self.call(calls.create_draft(name, description, config))

    def get_draft(self, draft_id: str) -> m.Draft:
        return self.call(calls.get_draft(draft_id))

    def patch_draft(
        self,
        draft_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> m.Draft:
        """``config`` is merged into the draft's."""
        return self.call(calls.patch_draft(draft_id, name, description, config))

    def delete_draft(self, draft_id: str) -> None:
        self.call(calls.delete_draft(draft_id))

    def add_web_source(
        self,
        draft_id: str,
        url: str,
        *,
        crawl: dict[str, Any] | None = None,
        refresh_every: str | None = None,
    ) -> list[m.DraftSource]:
        """A website crawled at finalize, and again every ``refresh_every`` (``"24h"``) if given."""
        return self.call(calls.add_web(draft_id, url, crawl, refresh_every))

    def add_text_source(self, draft_id: str, documents: Sequence[Mapping[str, Any]]) -> list[m.DraftSource]:
        """``documents``: ``{text, external_id?, title?, metadata?}`` records."""
        return self.call(calls.add_text(draft_id, documents))

    def upload_files(
        self, draft_id: str, files: Sequence[str | Path], *, external_ids: Sequence[str] | None = None
    ) -> list[m.DraftSource]:
        """One source per file, streamed from disk in one multipart request. ``external_ids`` (one
        per file): a file sent again with the same id replaces its earlier version."""
        return self.call(calls.add_files(draft_id, [Path(f) for f in files], external_ids))

    def delete_source(self, draft_id: str, source_id: str) -> None:
        self.call(calls.delete_source(draft_id, source_id))

    def preview(self, draft_id: str, *, source_id: str | None = None, limit: int = 10) -> m.Preview:
        return self.call(calls.preview(draft_id, source_id, limit))

    def validate(self, draft_id: str) -> m.Validation:
        return self.call(calls.validate(draft_id))

    def finalize(self, draft_id: str, *, not_before: datetime | None = None) -> m.Finalized:
        """The KB is created now; with ``not_before`` (timezone-aware) its work starts then."""
        return self.call(calls.finalize(draft_id, not_before))

    # knowledge bases

    def list_kbs(self, *, limit: int = 100, offset: int = 0) -> m.Page[m.KnowledgeBase]:
        return self.call(calls.list_kbs(limit, offset))

    def iter_kbs(self) -> Iterator[m.KnowledgeBase]:
        """Every KB of the workspace, newest first, page by page."""
        offset = 0
        while True:
            batch = self.list_kbs(limit=1000, offset=offset).items
            yield from batch
            if len(batch) < 1000:
                return
            offset += len(batch)

    def get_kb(self, kb_id: str) -> m.KnowledgeBase:
        return self.call(calls.get_kb(kb_id))

    def find_kb(self, name_or_id: str) -> m.KnowledgeBase:
        """A KB by id, or by name (the newest of that name); :class:`NotFound` when neither."""
        return find_kb(self.get_kb, self.iter_kbs, name_or_id)

    def patch_kb(self, kb_id: str, **fields: Any) -> m.KbChange:
        """``name``, ``description``, ``config``, ``activate``, ``evaluation`` (``PATCH /kbs/{id}``)."""
        return self.call(calls.patch_kb(kb_id, **fields))

    def delete_kb(self, kb_id: str) -> None:
        self.call(calls.delete_kb(kb_id))

    def add_documents(
        self, kb_id: str, documents: Sequence[Mapping[str, Any]], *, not_before: datetime | None = None
    ) -> m.DocumentsAdded:
        return self.call(calls.add_documents(kb_id, documents, not_before))

    def upload_documents(
        self, kb_id: str, files: Sequence[str | Path], *, external_ids: Sequence[str] | None = None
    ) -> m.DocumentsAdded:
        """Files added to a KB (a pipeline); with ``external_ids``, as :meth:`upload_files`."""
        return self.call(calls.upload_documents(kb_id, [Path(f) for f in files], external_ids))

    def add_source(
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
        return self.call(calls.add_source(kb_id, url, crawl, not_before, refresh_every))

    def list_sources(self, kb_id: str) -> m.Page[m.WebSourceInfo]:
        """The KB's web sources, with ``refresh_every`` and ``next_refresh_at``."""
        return self.call(calls.list_sources(kb_id))

    def refresh(self, kb_id: str, *, not_before: datetime | None = None) -> m.PipelineStarted:
        return self.call(calls.refresh(kb_id, not_before))

    def list_versions(self, kb_id: str) -> m.Page[m.KbVersion]:
        return self.call(calls.list_versions(kb_id))

    def activate_version(self, kb_id: str, version: int) -> m.KbVersion:
        return self.call(calls.activate_version(kb_id, version))

    # documents, search, feedback

    def list_documents(
        self, kb_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> m.Page[m.Document]:
        return self.call(calls.list_documents(kb_id, status, limit, offset))

    def get_document(self, document_id: str) -> m.Document:
        return self.call(calls.get_document(document_id))

    def list_chunks(self, document_id: str, *, limit: int = 1000, offset: int = 0) -> m.Page[m.Chunk]:
        return self.call(calls.list_chunks(document_id, limit, offset))

    def search(
        self,
        kb_id: str,
        query: str,
        *,
        top_k: int = 10,
        mode: Mode = "hybrid",
        filters: dict[str, Any] | None = None,
        version: int | None = None,
    ) -> m.SearchResponse:
        return self.call(
            calls.search(kb_id, query=query, top_k=top_k, mode=mode, filters=filters, version=version)
        )

    def feedback(
        self,
        query_id: str,
        feedback: Literal["positive", "negative", "neutral"],
        *,
        comment: str | None = None,
    ) -> m.Feedback:
        return self.call(calls.feedback(query_id, feedback, comment))

    # pipelines

    def get_pipeline(self, pipeline_id: str) -> m.Pipeline:
        return self.call(calls.get_pipeline(pipeline_id))

    def control_pipeline(self, pipeline_id: str, action: Action) -> m.Pipeline:
        """``cancel``, ``pause``, ``resume`` or ``retry`` (its failed documents)."""
        return self.call(calls.control_pipeline(pipeline_id, action))

    def events(self, pipeline_id: str, *, after: int = 0) -> Iterator[m.Event]:
        """The pipeline's events (``pipeline``, ``document``, ``end``) as they happen, each once.

        A dropped connection is reopened with ``Last-Event-ID``, so the server resumes after the
        last event seen; the iterator ends after ``end`` (or at once when the pipeline was over
        before ``after``)."""
        cursor, policy = EventCursor(seen=after), self.config.retry
        while True:
            try:
                with self._http.stream(
                    "GET",
                    calls.events_path(pipeline_id),
                    headers=cursor.headers(),
                    timeout=stream_timeout(self.config),
                ) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code >= 300:
                        response.read()
                        raise_refusal(response, cursor, policy)
                    else:
                        for line in response.iter_lines():
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
            time.sleep(cursor.delay(policy))

    def wait(self, pipeline_id: str, *, on_event: Callable[[m.Event], None] | None = None) -> m.Pipeline:
        """Follow the pipeline's events to its end; its final state."""
        for event in self.events(pipeline_id):
            if on_event is not None:
                on_event(event)
        return self.get_pipeline(pipeline_id)

    # jobs, queue, keys, evaluations

    def list_jobs(
        self, *, status: str | None = None, kb_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> m.Page[m.Job]:
        return self.call(calls.list_jobs(status, kb_id, limit, offset))

    def retry_job(self, job_id: str) -> m.Job:
        return self.call(calls.retry_job(job_id))

    def queue(self) -> m.QueueStats:
        return self.call(calls.queue())

    def get_workspace(self) -> m.WorkspaceInfo:
        """The key's workspace: its tier (priority, worker pool) and retention."""
        return self.call(calls.get_workspace())

    def patch_workspace(self, **fields: Any) -> m.WorkspaceInfo:
        """``priority``, ``pool`` (None: the default workers), ``retention`` (admin scope)."""
        return self.call(calls.patch_workspace(**fields))

    def list_keys(self) -> m.Page[m.ApiKey]:
        return self.call(calls.list_keys())

    def create_key(
        self, *, name: str = "", scopes: Sequence[str] = ("read",), expires_at: datetime | None = None
    ) -> m.ApiKey:
        """A new key of this workspace (admin scope); its secret is in ``.key``, shown once."""
        return self.call(calls.create_key(name, scopes, expires_at))

    def revoke_key(self, key_id: str) -> None:
        self.call(calls.revoke_key(key_id))

    def create_evaluation(self, kb_id: str, **fields: Any) -> m.EvaluationStarted:
        """``queries`` + ``qrels``, or ``from_feedback=True``; ``versions``, ``modes``."""
        return self.call(calls.create_evaluation(kb_id, **fields))

    def get_evaluation(self, evaluation_id: str) -> m.Evaluation:
        return self.call(calls.get_evaluation(evaluation_id))

    def wait_evaluation(self, evaluation_id: str, *, interval: float = 0.5) -> m.Evaluation:
        """Poll until the evaluation has ended (it runs as a job)."""
        while (found := self.get_evaluation(evaluation_id)).status in ("pending", "running", "queued"):
            time.sleep(interval)
        return found


def looks_like_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def find_kb(
    get: Callable[[str], m.KnowledgeBase], listed: Callable[[], Iterator[m.KnowledgeBase]], name_or_id: str
) -> m.KnowledgeBase:
    if looks_like_id(name_or_id):
        try:
            return get(name_or_id)
        except NotFound:
            pass  # a name that looks like an id
    for kb in listed():
        if kb.name == name_or_id:
            return kb
    raise NotFound(f"no knowledge base named {name_or_id!r} in this workspace", status=404)


__all__ = ["Client", "LorebaseError"]
