"""The ``process_document`` task's handler (``tasks/process_document.py``): read → parse → chunk
→ save chunks (pending embedding).

Saving replaces the document's chunks in one transaction: chunk ids are deterministic
(document id + index + content hash), so unchanged chunks keep their rows and vectors, stale
ones are deleted with their index entries, and only new ones wait for the embedder.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from lorebase import faults
from lorebase.adapters.embedders import tokenizer_ref
from lorebase.db.models import Chunk, Document, KnowledgeBase, Pipeline, Workspace, index_key, utcnow
from lorebase.db.states import DOCUMENT_BEFORE_EMBEDDING, DocumentStatus, transition
from lorebase.errors import NotFound, PermanentError, TransientError
from lorebase.jobs import retry
from lorebase.jobs.context import JobContext
from lorebase.pipeline import progress, versions
from lorebase.pipeline.documents import fail_document
from lorebase.pipeline.isolated import pool_for
from lorebase.pipeline.types import ChunkDraft, ChunkingConfig
from lorebase.runtime import Runtime
from lorebase.tasks import embed_chunks, process_document

_CHUNK_NS = uuid.UUID("6f1c1f3e-52a1-4c1e-9d7a-2f4c8f0b1a77")
#: at most this many tokens of title/section go in front of a chunk's text for embedding
PREFIX_TOKENS = 48


def chunk_id(document_id: str, index: int, content_hash: str, version: int = 1) -> str:
    """Deterministic: the same text at the same place of the same document (and KB config
    version) keeps its id, its row and its vector."""
    tail = "" if version == 1 else f":v{version}"
    return str(uuid.uuid5(_CHUNK_NS, f"{document_id}:{index}:{content_hash}{tail}"))


def embed_text(title: str | None, section: list[str] | None, text: str) -> str:
    """What the embedder reads: title and section path give a chunk its context."""
    head = " > ".join(p for p in [title or "", *(section or [])] if p)
    if len(head) > PREFIX_TOKENS * 5:
        head = head[: PREFIX_TOKENS * 5]
    return f"{head}\n\n{text}" if head else text


@dataclass(slots=True)
class Prepared:
    """A document parsed and chunked for each KB config version it is kept in (``prepare``),
    ready for ``save_chunks``: the process task and the re-index both save these."""

    doc_id: str
    page_count: int | None
    #: the chunks for each KB config version it was chunked for (``pipeline/versions.py``)
    drafts: dict[int, list[ChunkDraft]]
    title: str | None
    #: the parser's own metadata (``isolated.Prepared.metadata``), saved as ``metadata.parsed``
    parsed: dict[str, Any] = field(default_factory=dict)


class ProcessDocument:
    """Parse, chunk and save a group of documents (one, or several small ones batched by finalize).

    Grouping small documents amortises the per-job costs (claim, fencing, settling) that would
    otherwise compete with the embedder for the CPU. Failure stays per document: a permanent
    error fails its document only; a transient one retries the group, which is idempotent.
    A group whose parser process died, or that is run again after an attempt that failed or lost
    its worker, is split into one job per document (``retry.split_group``), so that a poison
    document (one that kills the parser, or the worker, every time) ends ``dead`` alone, not
    with its group.
    """

    def run(self, ctx: JobContext[Runtime]) -> None:
        runtime = ctx.runtime
        ids = process_document.document_ids(ctx.job.payload)
        ctx.check_control()
        if retry.split_group(len(ids), tried_before=ctx.job.attempts > 1):
            self._split(ctx, ids)  # its last attempt failed or lost its worker: one job each now
            return
        with ctx.transaction() as s:
            rows = s.execute(
                select(Document, KnowledgeBase)
                .join(KnowledgeBase, KnowledgeBase.id == Document.kb_id)
                .where(Document.id.in_(ids), Document.pipeline_id == ctx.job.pipeline_id)
            ).all()  # a document another pipeline owns now is left to that one
            targets = {kb.id: versions.maintained(s, kb) for _, kb in rows}
            work = [
                (doc.id, doc.blob_key, doc.media_type, doc.filename, doc.title, targets[kb.id])
                for doc, kb in rows
            ]
            transition(s, Document.id.in_([w[0] for w in work]), DocumentStatus.PARSING)
        try:
            outcomes = self.prepare(runtime, work)
        except TransientError:
            if not retry.split_group(len(work), tried_before=True):
                raise
            self._split(ctx, [w[0] for w in work])
            return
        prepared: list[Prepared] = []
        failed: list[tuple[str, str]] = []
        for doc_id, outcome in zip([w[0] for w in work], outcomes, strict=True):
            if isinstance(outcome, Prepared):
                prepared.append(outcome)
            elif len(work) == 1:
                raise outcome  # a job of one document fails with it (and shows as a failed job)
            else:
                failed.append((doc_id, outcome.message))
        faults.point("process.before_save")
        ctx.check_control()
        with ctx.transaction() as s:
            for doc_id, message in failed:
                fail_document(s, doc_id, message, "permanent")
            by_id = {item.doc_id: item for item in prepared}
            if ctx.job.kb_id:  # a version that starts building waits for this save (PostgreSQL)
                s.execute(
                    select(KnowledgeBase.id)
                    .where(KnowledgeBase.id == ctx.job.kb_id)
                    .with_for_update(read=True)
                )
            rows = s.execute(
                select(Document, KnowledgeBase)
                .join(KnowledgeBase, KnowledgeBase.id == Document.kb_id)
                .where(Document.id.in_(list(by_id)))
            ).all()  # documents deleted meanwhile are simply absent
            items = [(doc, kb, by_id[doc.id]) for doc, kb in rows]
            waiting = save_chunks(s, runtime, items)
            done = [doc.id for doc, _, _ in items if doc.id not in waiting]
            transition(s, Document.id.in_(list(waiting)), DocumentStatus.EMBEDDING)
            transition(s, Document.id.in_(done), DocumentStatus.INDEXED, indexed_at=utcnow())
            if waiting:
                embed_chunks.enqueue(
                    s,
                    runtime,
                    workspace_id=ctx.job.workspace_id,
                    pipeline_id=ctx.job.pipeline_id,
                    kb_id=ctx.job.kb_id,
                )
            if ctx.job.pipeline_id:
                progress.refresh_progress(s, ctx.job.pipeline_id)
        runtime.queue.notify()

    @staticmethod
    def _split(ctx: JobContext[Runtime], doc_ids: list[str]) -> None:
        """Hand each document of the group to a job of its own (this job then succeeds)."""
        runtime = ctx.runtime
        with ctx.transaction() as s:
            back = transition(
                s,
                [Document.id.in_(doc_ids), Document.pipeline_id == ctx.job.pipeline_id],
                DocumentStatus.PENDING,
            )
            process_document.enqueue(
                s,
                runtime,
                [(row.id, 0) for row in back],
                workspace_id=ctx.job.workspace_id,
                pipeline_id=ctx.job.pipeline_id,
                kb_id=ctx.job.kb_id,
                priority=ctx.job.priority,
                grouped=False,
            )
        runtime.queue.notify()

    @staticmethod
    def prepare(runtime: Runtime, work: list[tuple[Any, ...]]) -> list[Prepared | PermanentError]:
        """Parse and chunk the documents (in parallel, in the parse pool), once for each KB
        config version they are kept in; failures in place."""
        errors: dict[int, PermanentError] = {}
        asks: list[tuple[int, int]] = []  # (document's index in work, version)
        args: list[tuple[bytes, str, str | None, ChunkingConfig, str, int]] = []
        for n, (doc_id, blob_key, media_type, filename, _, targets) in enumerate(work):
            try:
                data = _load(runtime, doc_id, blob_key, media_type)
            except PermanentError as exc:
                errors[n] = exc
                continue
            for version, config in targets.items():
                tokens = tokenizer_ref(config["embedding"]["model"], runtime.settings.openai_tokenizer)
                max_tokens = runtime.embedding_info(config["embedding"])[1]
                asks.append((n, version))
                args.append((data, media_type, filename, ChunkingConfig.of(config), tokens, max_tokens))
        results: dict[int, dict[int, Any]] = {}
        for (n, version), result in zip(asks, pool_for(runtime.settings).prepare_all(args), strict=True):
            results.setdefault(n, {})[version] = result
        outcomes: list[Prepared | PermanentError] = []
        for n, (doc_id, _, _, filename, title, targets) in enumerate(work):
            if n in errors:
                outcomes.append(errors[n])
                continue
            per = results[n]
            failure = next((r for r in per.values() if isinstance(r, PermanentError)), None)
            live = per[next(iter(targets))]  # the live version comes first
            if failure is not None:
                outcomes.append(failure)
            elif not all(r.drafts for r in per.values()):
                outcomes.append(PermanentError("no extractable text in this document"))
            else:
                title = title or live.title or live.leading_heading or filename
                drafts = {version: r.drafts for version, r in per.items()}
                outcomes.append(Prepared(doc_id, live.page_count, drafts, title, live.metadata))
        return outcomes

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        """The group failed as a whole: its documents not yet past parsing fail with its error."""
        transition(
            session,
            [
                Document.id.in_(process_document.document_ids(ctx.job.payload)),
                Document.pipeline_id == ctx.job.pipeline_id,
                Document.status.in_(DOCUMENT_BEFORE_EMBEDDING),
            ],
            DocumentStatus.FAILED,
            error=message,
            error_kind=kind,
        )


def _load(runtime: Runtime, doc_id: str, blob_key: str | None, media_type: str | None) -> bytes:
    if blob_key is None or media_type is None:
        raise original_removed(runtime, doc_id) or PermanentError("the document has no stored content")
    try:
        return runtime.blobs.get(blob_key)
    except NotFound:  # retention may have dropped it since the document was read
        raise original_removed(runtime, doc_id) or PermanentError(
            "the uploaded file is missing from storage"
        ) from None


def original_removed(runtime: Runtime, doc_id: str) -> PermanentError | None:
    """The error of a document whose original the workspace's retention deleted
    (``services/lifecycle.py``), or None when it was not that."""
    with runtime.db.read_session() as s:
        row = s.execute(
            select(
                Document.filename,
                Document.title,
                Document.indexed_at,
                Document.original_removed_at,
                Workspace.retention,
            )
            .join(Workspace, Workspace.id == Document.workspace_id)
            .where(Document.id == doc_id)
        ).first()
    if row is None or row.original_removed_at is None:
        return None
    name = row.filename or row.title or doc_id
    after = ""
    if row.indexed_at is not None:
        after = (
            f", {(row.original_removed_at - row.indexed_at).total_seconds() / 86400:.3g} days after indexing,"
        )
    days = runtime.settings.retention.for_workspace(row.retention, "originals_days")
    return PermanentError(
        f"the original of {name!r} was deleted on {row.original_removed_at:%Y-%m-%d %H:%M} UTC{after} by the "
        f"workspace's retention policy (originals_days={days:g}); upload it again to re-index it"
    )


def _chunk_rows(
    doc: Document, drafts: list[ChunkDraft], title: str | None, version: int
) -> list[dict[str, Any]]:
    """Rows for the ``chunks`` table (keyed by column name: they are inserted through Core)."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for i, d in enumerate(drafts):
        h = hashlib.sha256(d.text.encode()).hexdigest()
        meta = dict(d.metadata)
        if doc.source_url:
            meta.setdefault("url", doc.source_url)
        rows.append(
            {
                "id": chunk_id(doc.id, i, h, version),
                "document_id": doc.id,
                "kb_id": doc.kb_id,
                "workspace_id": doc.workspace_id,
                "chunk_index": i,
                "content": d.text,
                "embed_text": embed_text(title, meta.get("section"), d.text),
                "token_count": d.token_count,
                "content_hash": h,
                "metadata": meta,
                "embedded": False,
                "version": version,
                "created_at": now,
            }
        )
    return rows


def save_chunks(
    s: Session,
    runtime: Runtime,
    items: list[tuple[Document, KnowledgeBase, Prepared]],
    *,
    reindex_pipeline: str | None = None,
) -> set[str]:
    """Replace the chunks of several documents (of one KB) in a handful of statements per KB
    config version they were chunked for.

    Chunks whose id (document, index, content hash, version) is unchanged keep their rows and
    vectors; stale ones leave the store and the table; new ones are inserted pending. Versions
    that are no longer kept (retired, failed) meanwhile are left alone. Returns the ids of the
    documents that now wait for the embedder. A re-index (``reindex_pipeline``) adds chunks of a
    version being built: the documents themselves, and their own pipelines, are not touched.
    """
    if not items:
        return set()
    kb = items[0][1]  # a group's documents share their KB
    kept = versions.maintained(s, kb)
    if reindex_pipeline is None and any(not set(kept) <= set(item.drafts) for _, _, item in items):
        # a version started building after these documents were chunked: it must get their
        # chunks too, so they are chunked again (a retry) rather than saved without them
        raise TransientError("a new version of the knowledge base started building; chunking again")
    waiting: set[str] = set()
    fresh_total = 0
    for version, config in kept.items():
        wanted: dict[str, list[dict[str, Any]]] = {
            doc.id: _chunk_rows(doc, item.drafts[version], item.title, version)
            for doc, _, item in items
            if version in item.drafts
        }
        if not wanted:
            continue
        existing = s.execute(
            select(Chunk.id, Chunk.pk, Chunk.document_id, Chunk.embedded).where(
                Chunk.document_id.in_(list(wanted)), Chunk.version == version
            )
        ).all()
        wanted_ids = {row["id"] for rows in wanted.values() for row in rows}
        keep = {r.id for r in existing if r.id in wanted_ids}
        stale = [r.pk for r in existing if r.id not in keep]
        if stale:
            runtime.kb_store(config).delete(s, index_key(kb.id, version), stale)
            for i in range(0, len(stale), 500):
                s.execute(delete(Chunk).where(Chunk.pk.in_(stale[i : i + 500])))
        fresh = [row for rows in wanted.values() for row in rows if row["id"] not in keep]
        if fresh:  # through Core: the ORM's bulk insert costs more than the database does here
            s.execute(insert(cast(Table, Chunk.__table__)), fresh)
        waiting |= {row["document_id"] for row in fresh}
        waiting |= {r.document_id for r in existing if r.id in keep and not r.embedded}
        fresh_total += len(fresh)
    if reindex_pipeline is None:
        for doc, _, item in items:
            doc.title = item.title
            doc.chunk_count = len(item.drafts.get(kb.version) or next(iter(item.drafts.values())))
            doc.page_count = item.page_count
            doc.error = doc.error_kind = None
            if item.parsed:  # the parser's metadata under its own key, beside what the caller gave
                doc.meta = {**(doc.meta or {}), "parsed": item.parsed}
    pipeline_id = reindex_pipeline or items[0][0].pipeline_id
    if pipeline_id and fresh_total:
        s.execute(
            update(Pipeline)
            .where(Pipeline.id == pipeline_id)
            .values(chunks_created=Pipeline.chunks_created + fresh_total, updated_at=utcnow())
        )
    return waiting
