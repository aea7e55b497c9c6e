"""``evaluate``: run a retrieval evaluation (labelled queries against KB versions and modes) and
write its figures (``services/evaluations.py``). Not resumable: the figures are written in one
transaction at the end, so a lost attempt simply runs again from the start. One runs at a time
per evaluation; an evaluation that belongs to a pipeline (a new version's ``if_better``
activation) carries its ``pipeline_id``, so the pipeline settles only once it has ended."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lorebase.jobs.registry import TaskSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from lorebase.db.models import Evaluation
    from lorebase.runtime import Runtime

NAME = "evaluate"
#: below uploads and re-indexing (people waiting on documents, a version being built), above crawls
PRIORITY = 6


def key(job_payload: Mapping[str, Any]) -> str:
    return f"evaluate:{job_payload['evaluation_id']}"


SPEC = TaskSpec(
    name=NAME,
    handler="lorebase.services.evaluations:RunEvaluation",
    kind="process",
    priority=PRIORITY,
    concurrency_key=key,
    summary="score a KB's versions and search modes on labelled queries (nDCG, recall, MRR)",
)


def enqueue(s: Session, runtime: Runtime, evaluation: Evaluation) -> None:
    """Queue the evaluation's job in the caller's transaction, in its pipeline if it has one (the
    pipeline then settles only once the job has ended)."""
    job_payload = {"evaluation_id": evaluation.id}
    SPEC.enqueue(
        s,
        runtime.queue,
        runtime.settings,
        workspace_id=evaluation.workspace_id,
        pipeline_id=evaluation.pipeline_id,
        kb_id=evaluation.kb_id,
        payload=job_payload,
        dedupe_key=key(job_payload),
    )
