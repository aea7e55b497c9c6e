"""A KB on the int8 runtime, through the API: configured per KB, embedded and searched with its
own model, and never sharing cached vectors with an fp32 KB of the same texts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from lorebase.db.models import EmbeddingCache

INT8 = "local:all-MiniLM-L6-v2-int8"
FP32 = "local:all-MiniLM-L6-v2"
RECORDS = [
    {
        "external_id": "tea",
        "title": "Green tea",
        "text": "Green tea is brewed from unoxidised leaves at 80 degrees.",
    },
    {
        "external_id": "rust",
        "title": "Rust",
        "text": "The borrow checker enforces ownership rules at compile time.",
    },
    {
        "external_id": "mars",
        "title": "Mars",
        "text": "Olympus Mons on Mars is the tallest volcano in the solar system.",
    },
]


@pytest.fixture
def client(tmp_path: Path, int8_models: Path) -> Iterator[TestClient]:
    data_dir = tmp_path / "data"
    shutil.copytree(int8_models / "models", data_dir / "models")  # built once per session
    with running_app(make_settings(data_dir)) as c:
        yield c


def test_a_kb_on_int8_indexes_searches_and_keeps_its_own_vectors(client: TestClient) -> None:
    h = key_headers(client)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    done = {}
    for model in (INT8, FP32):
        started = finalize_draft(
            client, h, records=RECORDS, name=model, config={"embedding": {"model": model}}
        )
        assert wait_pipeline(client, h, started["pipeline_id"])["status"] == "completed"
        done[model] = started["kb_id"]

    kb = client.get(f"/api/v1/kbs/{done[INT8]}", headers=h).json()
    assert kb["config"]["embedding"]["model"] == INT8 and kb["counts"]["chunks"] == 3
    r = client.post(
        f"/api/v1/kbs/{done[INT8]}/search",
        json={"query": "which volcano is the highest", "mode": "vector", "top_k": 1},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert [hit["external_id"] for hit in r.json()["results"]] == ["mars"]

    # the same texts, cached once per model: int8 vectors are not fp32 ones
    with runtime.db.read_session() as s:
        rows = s.execute(select(EmbeddingCache.model_id, EmbeddingCache.vector)).all()
    by_model: dict[str, list[np.ndarray]] = {}
    for model_id, blob in rows:
        by_model.setdefault(model_id, []).append(np.frombuffer(blob, dtype=np.float32))
    assert sorted(by_model) == [FP32, INT8] and all(len(v) == 3 for v in by_model.values())
    assert not any(np.array_equal(a, b) for a in by_model[INT8] for b in by_model[FP32])


def test_an_unknown_model_is_refused_at_validation_with_the_ones_available(client: TestClient) -> None:
    h = key_headers(client)
    config = {"embedding": {"model": "local:nope"}}
    r = client.post("/api/v1/kb-drafts", json={"name": "x", "config": config}, headers=h)
    assert r.status_code == 201, r.text  # a draft may hold anything; validation says what is wrong
    draft = r.json()["id"]
    r = client.post(
        f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": RECORDS}, headers=h
    )
    assert r.status_code == 201, r.text
    report = client.post(f"/api/v1/kb-drafts/{draft}/validate", headers=h).json()
    assert report["is_valid"] is False
    message = next(e["message"] for e in report["errors"] if e["field"] == "config.embedding.model")
    assert INT8 in message and FP32 in message
