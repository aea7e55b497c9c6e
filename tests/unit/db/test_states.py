"""``db/states.py``: the states of documents, pipelines and jobs, and their sets."""

from __future__ import annotations

from lorebase.db.states import (
    DOCUMENT_BEFORE_EMBEDDING,
    DOCUMENT_FINAL,
    JOB_ACTIVE,
    JOB_FINAL,
    PIPELINE_FINAL,
    PIPELINE_HELD,
    PIPELINE_SETTLING,
    DocumentStatus,
    JobStatus,
    PipelineStatus,
)


def test_every_document_state_is_before_embedding_embedding_or_final_exactly_once() -> None:
    parts = [*DOCUMENT_BEFORE_EMBEDDING, DocumentStatus.EMBEDDING, *DOCUMENT_FINAL]
    assert sorted(parts) == sorted(DocumentStatus) and len(parts) == len(set(parts))


def test_every_job_state_is_active_or_final_exactly_once() -> None:
    assert sorted([*JOB_ACTIVE, *JOB_FINAL]) == sorted(JobStatus)


def test_pipeline_sets() -> None:
    assert not set(PIPELINE_FINAL) & set(PIPELINE_SETTLING)
    assert set(PIPELINE_SETTLING) | set(PIPELINE_FINAL) | {PipelineStatus.PAUSED} == set(PipelineStatus)
    assert PipelineStatus.PAUSED in PIPELINE_HELD and PipelineStatus.RUNNING not in PIPELINE_HELD


def test_a_state_is_its_string() -> None:
    assert DocumentStatus.INDEXED == "indexed" and f"{JobStatus.DEAD}" == "dead"
    assert {"status": PipelineStatus.COMPLETED_WITH_ERRORS}["status"] == "completed_with_errors"
