"""``embed_chunks``: embed a pipeline's pending chunks in batches that span documents and write
vectors, keyword entries and chunk states batch by batch (``pipeline/index.py``). Resumable:
every batch is saved progress, so restarts never dead-letter a loop that keeps moving. One
pending job per pipeline (and partition) does the work of every request for it, and one runs
at a time (the concurrency key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lorebase.jobs.registry import TaskSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from lorebase.runtime import Runtime

NAME = "embed_chunks"
#: the embedder loop first: it is the bottleneck, keep it fed and busy
PRIORITY = 20


def key(job_payload: Mapping[str, Any]) -> str:
    """``embed:<pipeline>`` (``:<part>/<n>`` with ``jobs.embed_partitions`` > 1): the dedupe and
    the concurrency key of a pipeline's embedding job (a re-index pipeline's job embeds its
    version's chunks: ``payload["version"]``)."""
    partitions = int(job_payload.get("partitions") or 1)
    base = f"embed:{job_payload['pipeline_id']}"
    return base if partitions <= 1 else f"{base}:{int(job_payload.get('partition') or 0)}/{partitions}"


SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.pipeline.index:EmbedChunks",
    kind="embed",
    priority=PRIORITY,
    resumable=True,
    concurrency_key=key,
    summary="embed a pipeline's pending chunks and index them, batch by batch",
)


def enqueue(
    s: Session,
    runtime: Runtime,
    *,
    workspace_id: str,
    pipeline_id: str | None,
    kb_id: str | None,
    version: int | None = None,
) -> None:
    """Queue the pipeline's embedding jobs (one per partition), unless pending ones exist: the
    dedupe key makes one pending job per partition do the work of every request."""
    partitions = runtime.settings.jobs.embed_partitions
    for part in range(partitions):
        job_payload: dict[str, Any] = {
            "pipeline_id": pipeline_id,
            "partition": part,
            "partitions": partitions,
        }
        if version is not None:
            job_payload["version"] = version
        SPEC.enqueue(
            s,
            runtime.queue,
            runtime.settings,
            workspace_id=workspace_id,
            pipeline_id=pipeline_id,
            kb_id=kb_id,
            payload=job_payload,
            dedupe_key=key(job_payload),
        )
