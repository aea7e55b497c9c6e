"""``Idempotency-Key`` on the POSTs that create work, driven through the HTTP API as a client would.

Counts come from the real SQLite database behind the app: a replay must create nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update

from conftest import finalize_draft, key_headers
from lorebase.api.idempotency import fingerprint
from lorebase.db.models import Document, IdempotencyKey, KnowledgeBase, Pipeline, utcnow
from lorebase.services import drafts, kbs

RECORD = {"external_id": "otter", "title": "Sea otters", "text": "Sea otters hold hands while they sleep."}
OTHER = {"external_id": "heron", "title": "Herons", "text": "Herons stand still for minutes to fish."}
MARKDOWN = b"# Kelp\n\nKelp forests grow up to half a metre a day in cold, nutrient-rich water.\n"


def _db(api: TestClient) -> Any:
    return api.app.state.runtime.db  # type: ignore[attr-defined]


def _count(api: TestClient, model: Any, *where: Any) -> int:
    with _db(api).read_session() as s:
        return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _draft(api: TestClient, auth: dict[str, str]) -> str:
    r = api.post("/api/v1/kb-drafts", json={"name": "otters"}, headers=auth)
    assert r.status_code == 201, r.text
    draft_id: str = r.json()["id"]
    body = {"type": "text", "documents": [RECORD]}
    r = api.post(f"/api/v1/kb-drafts/{draft_id}/sources", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return draft_id


def _kb(api: TestClient, auth: dict[str, str]) -> str:
    kb_id: str = finalize_draft(api, auth, records=[RECORD])["kb_id"]
    return kb_id


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    return body["error"]


def test_two_finalizes_with_one_key_make_one_kb_and_one_pipeline_and_replay_the_same_bytes(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft_id = _draft(api, auth)
    headers = {**auth, **_key()}

    first = api.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=headers)
    again = api.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=headers)

    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert _count(api, KnowledgeBase) == 1 and _count(api, Pipeline) == 1
    assert api.get("/api/v1/kbs", headers=auth).json()["total"] == 1
    # without the key, the draft is gone: the replay did not run finalize again
    assert api.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=auth).status_code == 404


def test_two_text_document_posts_with_one_key_start_one_pipeline(
    api: TestClient, auth: dict[str, str]
) -> None:
    kb_id = _kb(api, auth)
    headers = {**auth, **_key()}
    body = {"documents": [OTHER]}

    first = api.post(f"/api/v1/kbs/{kb_id}/documents", json=body, headers=headers)
    again = api.post(f"/api/v1/kbs/{kb_id}/documents", json=body, headers=headers)

    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    assert _count(api, Pipeline, Pipeline.kb_id == kb_id) == 2  # finalize's and this one
    assert _count(api, Document, Document.kb_id == kb_id) == 2


def test_a_multipart_upload_sent_again_with_a_new_boundary_is_replayed(
    api: TestClient, auth: dict[str, str]
) -> None:
    kb_id = _kb(api, auth)
    headers = {**auth, **_key()}
    files = [("files", ("kelp.md", MARKDOWN, "text/markdown"))]

    first = api.post(f"/api/v1/kbs/{kb_id}/documents", files=files, headers=headers)
    again = api.post(f"/api/v1/kbs/{kb_id}/documents", files=files, headers=headers)

    assert first.request.headers["content-type"] != again.request.headers["content-type"]  # boundaries
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    assert _count(api, Pipeline, Pipeline.kb_id == kb_id) == 2


def test_the_same_key_with_a_different_body_answers_422_and_creates_nothing(
    api: TestClient, auth: dict[str, str]
) -> None:
    kb_id = _kb(api, auth)
    headers = {**auth, **_key()}
    r = api.post(f"/api/v1/kbs/{kb_id}/documents", json={"documents": [OTHER]}, headers=headers)
    assert r.status_code == 202, r.text

    changed = {"documents": [{**OTHER, "text": "Herons nest in colonies called heronries."}]}
    r = api.post(f"/api/v1/kbs/{kb_id}/documents", json=changed, headers=headers)

    error = _error(r, 422, "idempotency_key_reused")
    assert "was used with a different request" in error["message"]
    assert "idempotent-replayed" not in r.headers
    assert _count(api, Pipeline, Pipeline.kb_id == kb_id) == 2
    texts = [d["title"] for d in api.get(f"/api/v1/kbs/{kb_id}/documents", headers=auth).json()["items"]]
    assert sorted(texts) == ["Herons", "Sea otters"]


def test_one_key_on_two_paths_runs_both(api: TestClient, auth: dict[str, str]) -> None:
    kb_a, kb_b = _kb(api, auth), _kb(api, auth)
    headers = {**auth, **_key()}
    body = {"documents": [OTHER]}

    a = api.post(f"/api/v1/kbs/{kb_a}/documents", json=body, headers=headers)
    b = api.post(f"/api/v1/kbs/{kb_b}/documents", json=body, headers=headers)

    assert a.status_code == b.status_code == 202 and "idempotent-replayed" not in b.headers
    assert a.json()["pipeline_id"] != b.json()["pipeline_id"]


def test_keys_of_two_workspaces_are_independent(api: TestClient, auth: dict[str, str]) -> None:
    other = key_headers(api, "team-b")
    key = _key()
    draft_a, draft_b = _draft(api, auth), _draft(api, other)

    a = api.post(f"/api/v1/kb-drafts/{draft_a}/finalize", headers={**auth, **key})
    b = api.post(f"/api/v1/kb-drafts/{draft_b}/finalize", headers={**other, **key})

    assert a.status_code == b.status_code == 202, (a.text, b.text)
    assert "idempotent-replayed" not in b.headers
    assert a.json()["kb_id"] != b.json()["kb_id"]
    assert api.get("/api/v1/kbs", headers=auth).json()["total"] == 1
    assert api.get("/api/v1/kbs", headers=other).json()["total"] == 1
    # and workspace B replays its own answer, not A's
    again = api.post(f"/api/v1/kb-drafts/{draft_b}/finalize", headers={**other, **key})
    assert again.headers["idempotent-replayed"] == "true" and again.content == b.content


def test_concurrent_requests_with_one_key_run_exactly_once(
    api: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kb_id = _kb(api, auth)
    real = kbs.add_documents

    def slow_add_documents(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)  # keeps the first request in flight while the others arrive
        return real(*args, **kwargs)

    monkeypatch.setattr(kbs, "add_documents", slow_add_documents)
    headers = {**auth, **_key()}
    start = threading.Barrier(4)
    answers: list[Any] = []

    def post() -> None:
        start.wait()
        answers.append(
            api.post(f"/api/v1/kbs/{kb_id}/documents", json={"documents": [OTHER]}, headers=headers)
        )

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert len(answers) == 4
    assert _count(api, Pipeline, Pipeline.kb_id == kb_id) == 2  # finalize's and exactly one more
    ran = [r for r in answers if r.status_code == 202 and "idempotent-replayed" not in r.headers]
    assert len(ran) == 1, [(r.status_code, r.text) for r in answers]
    busy = [r for r in answers if r.status_code == 409]
    assert busy, [(r.status_code, r.text) for r in answers]
    for r in busy:
        assert "still being processed" in _error(r, 409, "idempotency_key_in_use")["message"]
    for r in answers:
        assert r.status_code in (202, 409)
        if r.status_code == 202:
            assert r.content == ran[0].content
    # once the first has answered, the key replays
    again = api.post(f"/api/v1/kbs/{kb_id}/documents", json={"documents": [OTHER]}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true" and again.content == ran[0].content


def test_without_the_header_every_post_runs_and_nothing_is_kept(
    api: TestClient, auth: dict[str, str]
) -> None:
    kb_id = _kb(api, auth)
    body = {"documents": [OTHER]}

    first = api.post(f"/api/v1/kbs/{kb_id}/documents", json=body, headers=auth)
    again = api.post(f"/api/v1/kbs/{kb_id}/documents", json=body, headers=auth)

    assert first.status_code == again.status_code == 202
    assert "idempotent-replayed" not in again.headers
    assert first.json()["pipeline_id"] != again.json()["pipeline_id"]
    assert _count(api, Pipeline, Pipeline.kb_id == kb_id) == 3
    assert _count(api, IdempotencyKey) == 0


def test_a_5xx_is_not_stored_and_the_same_key_runs_again(
    api: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    draft_id = _draft(api, auth)
    real = drafts.finalize
    calls = []

    def flaky_finalize(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(drafts, "finalize", flaky_finalize)
    headers = {**auth, **_key()}
    client = TestClient(api.app, raise_server_exceptions=False)  # the app (and its workers) already run

    failed = client.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=headers)
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "internal_error"
    assert _count(api, IdempotencyKey) == 0

    retried = api.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=headers)
    assert retried.status_code == 202, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert len(calls) == 2 and _count(api, KnowledgeBase) == 1


def test_a_4xx_answer_is_stored_and_replayed(api: TestClient, auth: dict[str, str]) -> None:
    headers = {**auth, **_key()}
    missing = str(uuid.uuid4())

    first = api.post(f"/api/v1/kbs/{missing}/refresh", headers=headers)
    again = api.post(f"/api/v1/kbs/{missing}/refresh", headers=headers)

    _error(first, 404, "not_found")
    assert again.status_code == 404 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


def test_an_expired_key_runs_again_and_replaces_its_row(api: TestClient, auth: dict[str, str]) -> None:
    kb_id = _kb(api, auth)
    key = _key()
    body = {"documents": [OTHER]}
    first = api.post(f"/api/v1/kbs/{kb_id}/documents", json=body, headers={**auth, **key})
    with _db(api).session() as s:
        s.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))

    again = api.post(f"/api/v1/kbs/{kb_id}/documents", json=body, headers={**auth, **key})

    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert again.json()["pipeline_id"] != first.json()["pipeline_id"]
    assert _count(api, IdempotencyKey) == 1


def test_a_key_in_flight_answers_409_until_its_claim_is_abandoned(
    api: TestClient, auth: dict[str, str]
) -> None:
    kb_id = _kb(api, auth)
    key = "retry-me"
    path = f"/api/v1/kbs/{kb_id}/documents"
    body = b'{"documents": [{"title": "Herons", "text": "Herons stand still for minutes to fish."}]}'
    headers = {**auth, "Idempotency-Key": key, "Content-Type": "application/json"}
    with _db(api).read_session() as s:
        workspace_id = s.execute(
            select(KnowledgeBase.workspace_id).where(KnowledgeBase.id == kb_id)
        ).scalar_one()
    now = utcnow()
    with _db(api).session() as s:  # what a request that is still running leaves behind
        s.execute(
            insert(IdempotencyKey).values(
                id=str(uuid.uuid4()),
                workspace_id=workspace_id,
                key=key,
                method="POST",
                path=path,
                fingerprint=fingerprint(
                    method="POST", path=path, query="", content_type="application/json", body=body
                ),
                status="in_flight",
                created_at=now,
                expires_at=now + timedelta(days=1),
            )
        )

    busy = api.post(path, content=body, headers=headers)
    _error(busy, 409, "idempotency_key_in_use")
    assert _count(api, Pipeline, Pipeline.kb_id == kb_id) == 1

    with _db(api).session() as s:  # its server died ten minutes ago
        s.execute(update(IdempotencyKey).values(created_at=now - timedelta(minutes=11)))
    taken_over = api.post(path, content=body, headers=headers)
    assert taken_over.status_code == 202, taken_over.text
    assert _count(api, Pipeline, Pipeline.kb_id == kb_id) == 2


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_a_key_that_is_empty_or_longer_than_255_characters_is_refused(
    api: TestClient, auth: dict[str, str], key: str
) -> None:
    draft_id = _draft(api, auth)

    r = api.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers={**auth, "Idempotency-Key": key})

    assert "1 to 255 characters" in _error(r, 400, "invalid_idempotency_key")["message"]
    assert _count(api, KnowledgeBase) == 0 and _count(api, IdempotencyKey) == 0


def test_a_key_of_255_characters_is_accepted(api: TestClient, auth: dict[str, str]) -> None:
    headers = {**auth, "Idempotency-Key": "k" * 255}
    first = api.post("/api/v1/kb-drafts", json={"name": "long key"}, headers=headers)
    again = api.post("/api/v1/kb-drafts", json={"name": "long key"}, headers=headers)
    assert first.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_search_ignores_the_header(api: TestClient, auth: dict[str, str]) -> None:
    kb_id = _kb(api, auth)
    headers = {**auth, **_key()}
    r = api.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "otters"}, headers=headers)
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert _count(api, IdempotencyKey) == 0
