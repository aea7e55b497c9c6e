"""``reindex_version``: build a KB config version's chunks beside the live ones, from the stored
originals (``pipeline/reindex.py``). It chunks, in batches, every indexed document that has no
chunks in the version yet, saves them pending and queues the version's ``embed_chunks`` job, which
embeds them through the embedding cache (unchanged texts are never embedded again). Resumable:
each saved batch is progress, and a re-run picks up the documents still missing, so a crash or
a restart neither loses nor repeats work. One runs at a time per pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lorebase.jobs.registry import TaskSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from lorebase.runtime import Runtime

NAME = "reindex_version"
#: below uploads (people waiting on a new document) and above crawls
PRIORITY = 8


def key(job_payload: Mapping[str, Any]) -> str:
    return f"reindex:{job_payload['pipeline_id']}"


SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.pipeline.reindex:ReindexVersion",
    kind="process",
    priority=PRIORITY,
    resumable=True,
    concurrency_key=key,
    summary="chunk a KB's documents for a new config version, beside the live one",
)


def enqueue(
    s: Session, runtime: Runtime, *, workspace_id: str, pipeline_id: str, kb_id: str, version: int
) -> None:
    job_payload = {"pipeline_id": pipeline_id, "version": version}
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
