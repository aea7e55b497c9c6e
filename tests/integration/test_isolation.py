"""Workspaces are walls: another workspace's ids answer 404 on every endpoint of DESIGN.md §7,
searches never cross, keys are stored as hashes only, and a key's scopes are enforced.

Two workspaces build knowledge bases from *identical* text, so a search that leaked across the
wall would find the other workspace's chunks with the very same score. The tests that only
read, or are refused, share one app and one pair of workspaces (``shared``); each checks that
what it tried changed nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from lorebase.db.models import ApiKey, Base
from lorebase.services.auth import create_key

SHARED = [
    {
        "external_id": "bees",
        "title": "Bees",
        "text": "Forager honeybees perform a waggle dance to show "
        "their sisters the direction and distance of flowers.",
    },
    {
        "external_id": "ice",
        "title": "Glaciers",
        "text": "The Aletsch glacier is the largest glacier of the "
        "Alps and has been retreating since the nineteenth century.",
    },
]
FILE = (
    "notes.md",
    b"# Lighthouses\n\nThe Eddystone lighthouse stands on rocks off Plymouth.\n",
    "text/markdown",
)


def _build(api: TestClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    """A KB from the shared records and one file; every id a client of it would know."""
    out = finalize_draft(api, headers, records=SHARED, files=[("files", FILE)], name=name)
    assert wait_pipeline(api, headers, out["pipeline_id"])["status"] == "completed"
    docs = api.get(f"/api/v1/kbs/{out['kb_id']}/documents", headers=headers).json()["items"]
    out["documents"] = {d["id"] for d in docs}
    chunks = api.get(f"/api/v1/documents/{docs[0]['id']}/chunks", headers=headers).json()["items"]
    out["document_id"], out["chunk_id"] = docs[0]["id"], chunks[0]["id"]
    return out


Shared = tuple[TestClient, dict[str, Any]]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One app (with workers) and two workspaces, for the tests of this module that only read."""
    settings = make_settings(Path(tmp_path_factory.mktemp("isolation")) / "data")
    with running_app(settings) as client:
        yield client, _two_workspaces(client)


def _two_workspaces(api: TestClient) -> dict[str, Any]:
    a, b = key_headers(api, "alpha"), key_headers(api, "beta")
    kb_a, kb_b = _build(api, a, "shared-facts"), _build(api, b, "shared-facts")
    # A's other resources: an open draft with a source, a logged query, a job, its key
    draft = api.post("/api/v1/kb-drafts", json={"name": "open draft"}, headers=a).json()
    source = api.post(
        f"/api/v1/kb-drafts/{draft['id']}/sources",
        json={"type": "text", "documents": [{"text": "draft text"}]},
        headers=a,
    ).json()["sources"][0]
    query = api.post(f"/api/v1/kbs/{kb_a['kb_id']}/search", json={"query": "waggle dance"}, headers=a).json()
    evaluation = api.post(f"/api/v1/kbs/{kb_a['kb_id']}/evaluations", json=EVALUATION, headers=a).json()
    job = api.get("/api/v1/jobs", headers=a).json()["items"][0]
    key = api.get("/api/v1/keys", headers=a).json()["items"][0]
    return {
        "A": a,
        "B": b,
        "kb_a": kb_a,
        "kb_b": kb_b,
        "ids": {
            "kb": kb_a["kb_id"],
            "pipeline": kb_a["pipeline_id"],
            "document": kb_a["document_id"],
            "draft": draft["id"],
            "source": source["id"],
            "query": query["query_id"],
            "job": job["id"],
            "key": key["id"],
            "evaluation": evaluation["evaluation_id"],
        },
    }


EVALUATION = {"queries": [{"id": "q", "text": "waggle dance"}], "qrels": {"q": {"bees": 1}}}

#: every endpoint of DESIGN.md §7 that names a resource (plus the query log and key endpoints),
#: with a valid body, so that only the owner check can refuse it; destructive ones come last
MATRIX: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/api/v1/kb-drafts/{draft}", {}),
    ("PATCH", "/api/v1/kb-drafts/{draft}", {"json": {"name": "taken over"}}),
    ("POST", "/api/v1/kb-drafts/{draft}/sources", {"json": {"type": "text", "documents": [{"text": "x"}]}}),
    ("POST", "/api/v1/kb-drafts/{draft}/sources", {"files": [("files", FILE)]}),
    ("POST", "/api/v1/kb-drafts/{draft}/sources", {"json": {"type": "web", "url": "https://example.com/"}}),
    ("POST", "/api/v1/kb-drafts/{draft}/preview", {"json": {}}),
    ("POST", "/api/v1/kb-drafts/{draft}/validate", {}),
    ("GET", "/api/v1/kbs/{kb}", {}),
    ("GET", "/api/v1/kbs/{kb}/documents", {}),
    ("GET", "/api/v1/kbs/{kb}/sources", {}),
    ("GET", "/api/v1/documents/{document}", {}),
    ("GET", "/api/v1/documents/{document}/chunks", {}),
    ("POST", "/api/v1/kbs/{kb}/search", {"json": {"query": "waggle dance"}}),
    ("POST", "/api/v1/kbs/{kb}/search", {"json": {"query": "waggle dance", "mode": "vector"}}),
    ("POST", "/api/v1/kbs/{kb}/search", {"json": {"query": "waggle dance", "mode": "keyword"}}),
    ("GET", "/api/v1/kbs/{kb}/queries", {}),
    ("GET", "/api/v1/kbs/{kb}/queries/daily", {}),
    ("POST", "/api/v1/kbs/{kb}/evaluations", {"json": EVALUATION}),
    ("GET", "/api/v1/evaluations/{evaluation}", {}),
    ("POST", "/api/v1/queries/{query}/feedback", {"json": {"feedback": "negative", "comment": "spam"}}),
    ("GET", "/api/v1/pipelines/{pipeline}", {}),
    ("GET", "/api/v1/pipelines/{pipeline}/events", {}),
    ("GET", "/api/v1/jobs?kb_id={kb}", {}),
    ("POST", "/api/v1/pipelines/{pipeline}/pause", {}),
    ("POST", "/api/v1/pipelines/{pipeline}/resume", {}),
    ("POST", "/api/v1/pipelines/{pipeline}/retry", {}),
    ("POST", "/api/v1/pipelines/{pipeline}/cancel", {}),
    ("POST", "/api/v1/jobs/{job}/retry", {}),
    ("POST", "/api/v1/kbs/{kb}/documents", {"json": {"documents": [{"text": "planted"}]}}),
    ("POST", "/api/v1/kbs/{kb}/documents", {"files": [("files", FILE)]}),
    ("POST", "/api/v1/kbs/{kb}/sources", {"json": {"type": "web", "url": "https://example.com/"}}),
    ("POST", "/api/v1/kbs/{kb}/refresh", {}),
    ("DELETE", "/api/v1/kb-drafts/{draft}/sources/{source}", {}),
    ("POST", "/api/v1/kb-drafts/{draft}/finalize", {}),
    ("DELETE", "/api/v1/kb-drafts/{draft}", {}),
    ("DELETE", "/api/v1/keys/{key}", {}),
    ("DELETE", "/api/v1/kbs/{kb}", {}),
]


def test_every_endpoint_answers_404_to_another_workspaces_key_and_changes_nothing(shared: Shared) -> None:
    api, w = shared
    ids, a, b = w["ids"], w["A"], w["B"]
    before = api.get(f"/api/v1/kbs/{ids['kb']}", headers=a).json()
    log_before = api.get(f"/api/v1/kbs/{ids['kb']}/queries", headers=a).json()["items"]
    assert (ids["query"], None) in [(q["id"], q["feedback"]) for q in log_before]
    wrong = []
    for method, template, kwargs in MATRIX:
        path = template.format(**ids)
        r = api.request(method, path, headers=b, **kwargs)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 404 or body.get("error", {}).get("code") != "not_found":
            wrong.append(f"{method} {template}: {r.status_code} {r.text[:200]}")
    assert wrong == [], "\n".join(wrong)

    # the owner still has everything, unchanged
    after = api.get(f"/api/v1/kbs/{ids['kb']}", headers=a)
    assert after.status_code == 200 and after.json()["counts"] == before["counts"]
    assert after.json()["name"] == "shared-facts"
    draft = api.get(f"/api/v1/kb-drafts/{ids['draft']}", headers=a).json()
    assert draft["name"] == "open draft" and [s["id"] for s in draft["sources"]] == [ids["source"]]
    logged = api.get(f"/api/v1/kbs/{ids['kb']}/queries", headers=a).json()["items"]
    assert logged == log_before  # B's searches logged nothing there, its feedback changed nothing
    assert api.get("/api/v1/keys", headers=a).json()["items"][0]["state"] == "active"
    assert api.get(f"/api/v1/pipelines/{ids['pipeline']}", headers=a).json()["status"] == "completed"


def test_searches_never_return_another_workspaces_chunks_even_for_identical_text(shared: Shared) -> None:
    api, w = shared
    kb_b, theirs = w["kb_b"], w["kb_a"]["documents"]
    for mode in ("hybrid", "vector", "keyword"):
        for query in ("waggle dance of honeybees", "Aletsch glacier retreating", "Eddystone lighthouse"):
            r = api.post(
                f"/api/v1/kbs/{kb_b['kb_id']}/search",
                json={"query": query, "mode": mode, "top_k": 100},
                headers=w["B"],
            )
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            assert results, (mode, query)
            found = {x["document_id"] for x in results}
            assert found <= kb_b["documents"] and not found & theirs, (mode, query)
    # the same text in both KBs: each workspace finds only its own copy
    mine = api.post(f"/api/v1/kbs/{kb_b['kb_id']}/search", json={"query": "waggle"}, headers=w["B"]).json()
    other = api.post(
        f"/api/v1/kbs/{w['kb_a']['kb_id']}/search", json={"query": "waggle"}, headers=w["A"]
    ).json()
    assert mine["results"][0]["text"] == other["results"][0]["text"]
    assert mine["results"][0]["chunk_id"] != other["results"][0]["chunk_id"]


def test_lists_show_only_the_callers_workspace(shared: Shared) -> None:
    api, w = shared
    b = w["B"]
    kbs = api.get("/api/v1/kbs", headers=b).json()
    assert [k["id"] for k in kbs["items"]] == [w["kb_b"]["kb_id"]] and kbs["total"] == 1
    jobs = api.get("/api/v1/jobs", headers=b).json()["items"]
    assert jobs and {j["kb_id"] for j in jobs} == {w["kb_b"]["kb_id"]}
    keys = api.get("/api/v1/keys", headers=b).json()["items"]
    assert w["ids"]["key"] not in {k["id"] for k in keys} and len(keys) == 1
    queue = api.get("/api/v1/queue", headers=b).json()
    assert queue["pending"] == 0 and queue["running"] == 0


def test_the_dashboard_answers_404_for_another_workspaces_kb(shared: Shared) -> None:
    api, w = shared
    b_key = w["B"]["Authorization"].split()[1]
    api.cookies.set("lorebase_session", b_key)
    try:
        assert api.get(f"/kbs/{w['kb_b']['kb_id']}").status_code == 200
        page = api.get(f"/kbs/{w['ids']['kb']}")
        assert page.status_code == 404 and "shared-facts" not in page.text
    finally:
        api.cookies.clear()


def test_idempotency_keys_are_per_workspace(api: TestClient) -> None:
    a, b = key_headers(api, "alpha"), key_headers(api, "beta")
    same = {"Idempotency-Key": "create-kb-1"}
    first = api.post("/api/v1/kb-drafts", json={"name": "mine"}, headers={**a, **same})
    second = api.post("/api/v1/kb-drafts", json={"name": "mine"}, headers={**b, **same})
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]  # not A's response replayed to B
    assert api.get(f"/api/v1/kb-drafts/{first.json()['id']}", headers=b).status_code == 404


def test_the_database_holds_only_key_hashes(api: TestClient) -> None:
    rt = api.app.state.runtime  # type: ignore[attr-defined]
    plain, row = create_key(rt.db, workspace="alpha", name="ci")
    made = api.post("/api/v1/keys", json={"scopes": ["read"]}, headers={"Authorization": f"Bearer {plain}"})
    assert made.status_code == 201, made.text
    minted = made.json()["key"]
    assert api.get("/api/v1/kbs", headers={"Authorization": f"Bearer {minted}"}).status_code == 200
    assert (
        "key_hash" not in made.json()
        and "key_hash" not in api.get("/api/v1/keys", headers={"Authorization": f"Bearer {plain}"}).text
    )

    secrets = [plain, minted, plain[3:], minted[3:]]
    with rt.db.read_session() as s:
        stored = s.execute(select(ApiKey.key_hash).where(ApiKey.id == row.id)).scalar_one()
        assert stored == hashlib.sha256(plain.encode()).hexdigest()
        for table in Base.metadata.sorted_tables:  # every value of every row of every table
            for record in s.execute(text(f"SELECT * FROM {table.name}")).all():
                dump = " ".join(str(v) for v in record)
                assert not any(x in dump for x in secrets), f"a plain key is stored in {table.name}"
    db_files = [p for p in rt.settings.data_dir.rglob("*") if p.is_file() and "lorebase.db" in p.name]
    for path in db_files:  # SQLite: the raw file and its WAL too
        raw = path.read_bytes()
        assert not any(x.encode() in raw for x in secrets), path


def test_revoked_and_expired_keys_get_401(api: TestClient) -> None:
    admin = key_headers(api, "alpha")
    made = api.post("/api/v1/keys", json={"name": "temp", "scopes": ["read", "write"]}, headers=admin).json()
    temp = {"Authorization": f"Bearer {made['key']}"}
    assert api.get("/api/v1/kbs", headers=temp).status_code == 200
    assert api.delete(f"/api/v1/keys/{made['id']}", headers=admin).status_code == 204
    r = api.get("/api/v1/kbs", headers=temp)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    states = {k["name"]: k["state"] for k in api.get("/api/v1/keys", headers=admin).json()["items"]}
    assert states["temp"] == "revoked"

    past = api.post("/api/v1/keys", json={"expires_at": "2020-01-01T00:00:00Z"}, headers=admin)
    assert past.status_code == 422 and "future" in past.json()["error"]["message"]
    assert api.get("/api/v1/kbs", headers={"Authorization": "Bearer lb_not-a-key"}).status_code == 401


def test_a_read_key_can_read_and_search_but_not_create_change_or_delete(api: TestClient) -> None:
    admin = key_headers(api, "alpha")
    built = finalize_draft(api, admin, records=SHARED[:1], name="facts")
    assert wait_pipeline(api, admin, built["pipeline_id"])["status"] == "completed"
    kb = built["kb_id"]
    reader_key = api.post("/api/v1/keys", json={"scopes": ["read"]}, headers=admin).json()["key"]
    reader = {"Authorization": f"Bearer {reader_key}"}

    assert api.get("/api/v1/kbs", headers=reader).json()["total"] == 1
    assert api.get(f"/api/v1/kbs/{kb}/documents", headers=reader).status_code == 200
    found = api.post(f"/api/v1/kbs/{kb}/search", json={"query": "waggle dance"}, headers=reader)
    assert found.status_code == 200 and found.json()["results"]
    feedback = api.post(
        f"/api/v1/queries/{found.json()['query_id']}/feedback", json={"feedback": "positive"}, headers=reader
    )
    assert feedback.status_code == 200

    refused = [
        ("POST", "/api/v1/kb-drafts", {"json": {"name": "new"}}),
        ("PATCH", f"/api/v1/kb-drafts/{built['draft_id']}", {"json": {"name": "renamed"}}),
        ("POST", f"/api/v1/kbs/{kb}/documents", {"json": {"documents": [{"text": "more"}]}}),
        ("POST", f"/api/v1/kbs/{kb}/refresh", {}),
        ("POST", f"/api/v1/pipelines/{built['pipeline_id']}/retry", {}),
        ("DELETE", f"/api/v1/kbs/{kb}", {}),
        ("GET", "/api/v1/keys", {}),
        ("POST", "/api/v1/keys", {"json": {"scopes": ["admin"]}}),
    ]
    for method, path, kwargs in refused:
        r = api.request(method, path, headers=reader, **kwargs)
        assert r.status_code == 403, (method, path, r.text)
        error = r.json()["error"]
        assert error["code"] == "forbidden" and "scope(s) read;" in error["message"]
        assert error["details"]["required"] in ("write", "admin")
    assert api.get(f"/api/v1/kbs/{kb}", headers=admin).json()["counts"]["documents"] == 1

    writer_key = api.post("/api/v1/keys", json={"scopes": ["write"]}, headers=admin).json()["key"]
    writer = {"Authorization": f"Bearer {writer_key}"}
    assert api.post("/api/v1/kb-drafts", json={"name": "new"}, headers=writer).status_code == 201
    assert api.get("/api/v1/keys", headers=writer).status_code == 403  # key management is admin's
    escalate = api.post("/api/v1/keys", json={"scopes": ["read", "write", "admin", "root"]}, headers=admin)
    assert escalate.status_code == 422
