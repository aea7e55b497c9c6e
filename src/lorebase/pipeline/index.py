"""The ``embed_chunks`` task's handler (``tasks/embed_chunks.py``): embed a pipeline's pending chunks in batches that span documents,
and write vectors, keyword entries, chunk states, cache rows and counters in one transaction
per batch. Re-running is harmless: only chunks still pending are written, upserts by pk.

With ``jobs.embed_partitions`` = N > 1, a pipeline has N embedding jobs, each taking the chunks
whose pk is its partition modulo N, so N workers (on N machines) embed one pipeline at once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lorebase import faults
from lorebase.adapters.stores.protocol import IndexEntry, Store
from lorebase.db.engine import insert_or_skip
from lorebase.db.models import Chunk, Document, EmbeddingCache, KnowledgeBase, Pipeline, utcnow
from lorebase.db.states import DocumentStatus, transition
from lorebase.errors import PermanentError
from lorebase.jobs.context import JobContext
from lorebase.pipeline import progress
from lorebase.pipeline.embed import Embedded, cached_vectors, embed_with_cache
from lorebase.runtime import Runtime


class EmbedChunks:
    def run(self, ctx: JobContext[Runtime]) -> None:
        while True:
            ctx.check_control()  # what is written stays written: a drain may stop here (resumable)
            if not self.run_batch(ctx):
                return

    def run_batch(self, ctx: JobContext[Runtime]) -> bool:
        """Embed and write one batch of the pipeline's pending chunks (this job's partition), in
        one fenced transaction that saves progress; False when none is left."""
        runtime = ctx.runtime
        pipeline_id = ctx.job.payload["pipeline_id"]
        with runtime.db.read_session() as s:
            kb = s.execute(
                select(KnowledgeBase)
                .join(Pipeline, Pipeline.kb_id == KnowledgeBase.id)
                .where(Pipeline.id == pipeline_id)
            ).scalar_one_or_none()
            if kb is None:
                raise PermanentError("the knowledge base was deleted")
            kb_id, config, workspace_id = kb.id, kb.config, kb.workspace_id
            embedder = runtime.kb_embedder(config)
            rows = s.execute(
                select(
                    Chunk.pk,
                    Chunk.embed_text,
                    Chunk.content,
                    Chunk.document_id,
                    Chunk.meta,
                    Document.title,
                )
                .join(Document, Document.id == Chunk.document_id)
                .where(
                    Document.pipeline_id == pipeline_id,
                    Chunk.embedded.is_(False),
                    *_partition(ctx.job.payload),
                )
                .order_by(Chunk.pk)
                .limit(runtime.settings.embed_batch_size)
            ).all()
            if not rows:
                return False
            texts = [r.embed_text for r in rows]
            cached = cached_vectors(s, embedder.model_id, texts, workspace_id)
        result = embed_with_cache(embedder, texts, cached, workspace_id)
        with ctx.transaction(progress=True) as s:
            write_batch(
                s, runtime.kb_store(config), embedder.model_id, kb_id, pipeline_id, list(rows), result
            )
        faults.point("embed.after_batch")  # vectors written, job not done: the re-run must converge
        return True

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        """The embedder gave up: the documents waiting on it fail, their siblings stay indexed."""
        pipeline_id = ctx.job.payload["pipeline_id"]
        waiting = select(Chunk.document_id).where(Chunk.embedded.is_(False), *_partition(ctx.job.payload))
        transition(
            session,
            [
                Document.pipeline_id == pipeline_id,
                Document.status == DocumentStatus.EMBEDDING,
                Document.id.in_(waiting),
            ],
            DocumentStatus.FAILED,
            error=f"embedding failed: {message}",
            error_kind=kind,
        )


def _partition(payload: dict[str, Any]) -> tuple[Any, ...]:
    """The filter of this job's share of the chunks (none when the pipeline has one embed job)."""
    partitions = int(payload.get("partitions") or 1)
    if partitions <= 1:
        return ()
    return (Chunk.pk % partitions == int(payload.get("partition") or 0),)


def write_batch(
    s: Session, store: Store, model_id: str, kb_id: str, pipeline_id: str, rows: list[Any], result: Embedded
) -> None:
    pks = [r.pk for r in rows]
    still = set(s.execute(select(Chunk.pk).where(Chunk.pk.in_(pks), Chunk.embedded.is_(False))).scalars())
    entries = [
        IndexEntry(
            pk=r.pk,
            kb_id=kb_id,
            vector=result.vectors[i],
            text=r.content,
            title=r.title or "",
            section=" > ".join((r.meta or {}).get("section") or []),
        )
        for i, r in enumerate(rows)
        if r.pk in still
    ]
    store.upsert(s, entries)
    if still:
        s.execute(update(Chunk).where(Chunk.pk.in_(list(still))).values(embedded=True))
    if result.new_cache_rows:
        now = utcnow()
        cache_rows = [
            {"model_id": model_id, "text_hash": h, "vector": v, "created_at": now}
            for h, v in result.new_cache_rows
        ]
        s.execute(insert_or_skip(s, EmbeddingCache, cache_rows))
    encoded_now = sum(1 for i in result.encoded if rows[i].pk in still)
    s.execute(
        update(Pipeline)
        .where(Pipeline.id == pipeline_id)
        .values(
            chunks_embedded=Pipeline.chunks_embedded + encoded_now,
            chunks_indexed=Pipeline.chunks_indexed + len(entries),
            phase="embedding",
            updated_at=utcnow(),
        )
    )
    doc_ids = list({r.document_id for r in rows})
    pending_docs = select(Chunk.document_id).where(Chunk.document_id.in_(doc_ids), Chunk.embedded.is_(False))
    transition(
        s,
        [
            Document.id.in_(doc_ids),
            Document.status == DocumentStatus.EMBEDDING,
            Document.id.not_in(pending_docs),
        ],
        DocumentStatus.INDEXED,
        indexed_at=utcnow(),
    )
    progress.refresh_progress(s, pipeline_id)
