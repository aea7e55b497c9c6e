"""Work sent more than once, through the HTTP API as a client would: the same documents
re-ingested five times (case 10) and one Idempotency-Key on two POSTs (case 11)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from conftest import finalize_draft, wait_pipeline
from support.faults import audit, records


def _chunks(api: TestClient, auth: dict[str, str], kb_id: str) -> int:
    r = api.get(f"/api/v1/kbs/{kb_id}", headers=auth)
    assert r.status_code == 200, r.text
    return int(r.json()["counts"]["chunks"])


def test_the_same_documents_ingested_five_more_times_leave_the_chunks_unchanged(
    api: TestClient, auth: dict[str, str]
) -> None:
    docs = records(12, skip=400)
    body = b"# Handbook\n\n" + b"\n\n".join(d["text"].encode() for d in docs[:4])
    out = finalize_draft(api, auth, records=docs, files=[("files", ("handbook.md", body, "text/markdown"))])
    assert wait_pipeline(api, auth, out["pipeline_id"])["status"] == "completed"
    kb_id = out["kb_id"]
    first = _chunks(api, auth, kb_id)
    assert first >= 13
    for _ in range(5):
        r = api.post(f"/api/v1/kbs/{kb_id}/documents", json={"documents": docs}, headers=auth)
        assert r.status_code == 202, r.text
        assert wait_pipeline(api, auth, r.json()["pipeline_id"])["status"] == "completed"
        r = api.post(
            f"/api/v1/kbs/{kb_id}/documents",
            files=[("files", ("handbook.md", body, "text/markdown"))],
            headers=auth,
        )
        assert r.status_code == 202, r.text
        assert wait_pipeline(api, auth, r.json()["pipeline_id"])["status"] == "completed"
        assert _chunks(api, auth, kb_id) == first
    r = api.get(f"/api/v1/kbs/{kb_id}/documents", params={"limit": 100}, headers=auth)
    assert r.json()["total"] == 13  # 12 records + 1 file, each once
    audit(api.app.state.runtime, counters=False)  # type: ignore[attr-defined]


def test_two_posts_with_one_idempotency_key_make_one_pipeline(api: TestClient, auth: dict[str, str]) -> None:
    out = finalize_draft(api, auth, records=records(2, skip=500))
    wait_pipeline(api, auth, out["pipeline_id"])
    kb_id = out["kb_id"]
    body = {"documents": records(3, skip=520)}
    headers = {**auth, "Idempotency-Key": "upload-7f3a"}
    answers: list[Any] = [
        api.post(f"/api/v1/kbs/{kb_id}/documents", json=body, headers=headers) for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json()["pipeline_id"] == answers[1].json()["pipeline_id"]
    assert answers[1].headers.get("Idempotent-Replayed") == "true"
    wait_pipeline(api, auth, answers[0].json()["pipeline_id"])
    r = api.get(f"/api/v1/kbs/{kb_id}/documents", params={"limit": 100}, headers=auth)
    assert r.json()["total"] == 5
    state = audit(api.app.state.runtime)  # type: ignore[attr-defined]
    assert state["statuses"] == {"indexed": 5}
