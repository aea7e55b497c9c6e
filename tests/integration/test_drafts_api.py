"""KB drafts, errors, auth and workspace isolation, driven through the HTTP API as a client would."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from conftest import wait_pipeline
from lorebase.adapters.embedders.local import load_tokenizer
from lorebase.db.models import Chunk, Document, Draft, Job, KnowledgeBase, Pipeline, utcnow
from lorebase.jobs.scheduler import SYSTEM_WORKSPACE
from lorebase.services.auth import create_key
from support.testdb import ON_POSTGRES
from support.testexec import ON_BROKER

#: cases that reach into the SQL drafts table; in the scaled mode drafts live in Redis, where
#: test_drafts_redis.py checks the same expiry rules
SQL_DRAFTS = pytest.mark.skipif(ON_BROKER, reason="drafts live in Redis in the scaled mode")

DEFAULT_CONFIG = {
    "chunking": {"strategy": "recursive", "chunk_size": 200, "chunk_overlap": 20},
    "embedding": {"model": "local:all-MiniLM-L6-v2"},
    "store": {"type": "pgvector" if ON_POSTGRES else "sqlite"},  # the store follows the database
}
PARAGRAPHS = [
    "Octopuses have three hearts: two pump blood through the gills and one through the rest of the body.",
    "Their blood is blue because it carries oxygen with hemocyanin, a copper-based protein, instead of "
    "the iron-based hemoglobin that mammals use.",
    "Most of an octopus's neurons sit in its eight arms, which can taste and touch independently of the "
    "central brain and keep reacting for a while after being severed.",
    "Octopuses change colour and skin texture in a fraction of a second using chromatophores, "
    "iridophores and leucophores controlled directly by the nervous system.",
    "The mimic octopus of Indonesia impersonates lionfish, flatfish and sea snakes to scare off predators.",
    "After mating, most female octopuses guard their eggs without eating and die soon after they hatch.",
]
MARKDOWN = ("# Octopus biology\n\n" + "\n\n".join(PARAGRAPHS) + "\n").encode()
RECORD = {"external_id": "mantis", "title": "Mantis shrimp", "text": "A mantis shrimp punches at 23 m/s."}


def _error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the documented error shape and return its ``error`` object."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def _draft(api: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/kb-drafts", json={"name": "draft", **body}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def _add_text(api: TestClient, auth: dict[str, str], draft_id: str, *records: dict[str, Any]) -> Any:
    r = api.post(
        f"/api/v1/kb-drafts/{draft_id}/sources",
        json={"type": "text", "documents": list(records or [RECORD])},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    return r.json()["sources"]


def _row_counts(api: TestClient) -> dict[str, int]:
    db = api.app.state.runtime.db  # type: ignore[attr-defined]
    with db.read_session() as s:
        counts = {
            m.__tablename__: s.execute(select(func.count()).select_from(m)).scalar_one()
            for m in (KnowledgeBase, Document, Chunk, Pipeline)
        }
        # the workers' periodic housekeeping (jobs/scheduler.py) is no draft's doing
        counts["jobs"] = s.execute(
            select(func.count()).select_from(Job).where(Job.workspace_id != SYSTEM_WORKSPACE)
        ).scalar_one()
        return counts


NOTHING = {"knowledge_bases": 0, "documents": 0, "chunks": 0, "pipelines": 0, "jobs": 0}


# -- the draft resource ---------------------------------------------------------------------------


def test_create_returns_201_with_default_config_and_get_returns_the_same_draft(
    api: TestClient, auth: dict[str, str]
) -> None:
    r = api.post("/api/v1/kb-drafts", json={"name": "notes", "description": "my notes"}, headers=auth)
    assert r.status_code == 201, r.text
    draft = r.json()
    assert draft["name"] == "notes" and draft["description"] == "my notes"
    assert draft["config"] == DEFAULT_CONFIG and draft["sources"] == []
    assert draft["expires_at"] and draft["id"]
    got = api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth)
    assert got.status_code == 200 and got.json() == draft


def test_patch_merges_config_so_changing_chunk_size_keeps_the_strategy(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth, config={"chunking": {"strategy": "structure"}})
    r = api.patch(
        f"/api/v1/kb-drafts/{draft['id']}",
        json={"name": "renamed", "config": {"chunking": {"chunk_size": 128}}},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "renamed"
    assert r.json()["config"] == {
        **DEFAULT_CONFIG,
        "chunking": {"strategy": "structure", "chunk_size": 128, "chunk_overlap": 20},
    }
    assert api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["config"] == r.json()["config"]


def test_patch_with_an_unknown_config_key_is_422_naming_the_key_and_changes_nothing(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth)
    r = api.patch(
        f"/api/v1/kb-drafts/{draft['id']}", json={"config": {"chunking": {"size": 128}}}, headers=auth
    )
    err = _error(r, 422, "invalid_input")
    assert any("size" in d["field"] for d in err["details"]), err
    r = api.patch(f"/api/v1/kb-drafts/{draft['id']}", json={"config": {"colour": "red"}}, headers=auth)
    err = _error(r, 422, "invalid_input")
    assert any("colour" in d["field"] for d in err["details"]), err
    assert api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["config"] == DEFAULT_CONFIG


def test_create_with_a_missing_name_is_422_naming_the_field(api: TestClient, auth: dict[str, str]) -> None:
    err = _error(api.post("/api/v1/kb-drafts", json={}, headers=auth), 422, "invalid_input")
    assert [d["field"] for d in err["details"]] == ["name"]


@SQL_DRAFTS
def test_every_change_pushes_the_expiry_a_full_ttl_ahead(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    with api.app.state.runtime.db.session() as s:  # type: ignore[attr-defined]
        s.execute(
            update(Draft).where(Draft.id == draft["id"]).values(expires_at=utcnow() + timedelta(minutes=1))
        )
    r = api.patch(f"/api/v1/kb-drafts/{draft['id']}", json={"description": "touched"}, headers=auth)
    assert r.status_code == 200
    with api.app.state.runtime.db.read_session() as s:  # type: ignore[attr-defined]
        expires = s.execute(select(Draft.expires_at).where(Draft.id == draft["id"])).scalar_one()
    assert expires - utcnow() > timedelta(hours=23)


def test_delete_answers_204_and_then_the_draft_is_404(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    r = api.delete(f"/api/v1/kb-drafts/{draft['id']}", headers=auth)
    assert r.status_code == 204 and r.content == b""
    _error(api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth), 404, "not_found")
    _error(api.delete(f"/api/v1/kb-drafts/{draft['id']}", headers=auth), 404, "not_found")


@SQL_DRAFTS
def test_an_expired_draft_is_404_everywhere(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    _add_text(api, auth, draft["id"])
    with api.app.state.runtime.db.session() as s:  # type: ignore[attr-defined]
        s.execute(
            update(Draft).where(Draft.id == draft["id"]).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    base = f"/api/v1/kb-drafts/{draft['id']}"
    _error(api.get(base, headers=auth), 404, "not_found")
    _error(api.patch(base, json={"name": "x"}, headers=auth), 404, "not_found")
    _error(api.post(f"{base}/validate", headers=auth), 404, "not_found")
    _error(api.post(f"{base}/finalize", headers=auth), 404, "not_found")
    assert _row_counts(api) == NOTHING


# -- sources ------------------------------------------------------------------------------------------


def test_removing_a_source_answers_204_and_it_is_gone_from_sources(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth)
    (text_source,) = _add_text(api, auth, draft["id"])
    r = api.post(
        f"/api/v1/kb-drafts/{draft['id']}/sources",
        files=[("files", ("octopus.md", MARKDOWN, "text/markdown"))],
        headers=auth,
    )
    (file_source,) = r.json()["sources"]
    assert file_source["filename"] == "octopus.md" and file_source["size_bytes"] == len(MARKDOWN)
    r = api.delete(f"/api/v1/kb-drafts/{draft['id']}/sources/{text_source['id']}", headers=auth)
    assert r.status_code == 204
    sources = api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["sources"]
    assert [s["id"] for s in sources] == [file_source["id"]]


def test_removing_an_unknown_source_is_404(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    _add_text(api, auth, draft["id"])
    r = api.delete(
        f"/api/v1/kb-drafts/{draft['id']}/sources/00000000-0000-0000-0000-000000000000", headers=auth
    )
    _error(r, 404, "not_found")
    assert len(api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["sources"]) == 1


def test_a_web_source_is_normalised_and_gets_the_documented_crawl_defaults(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth)
    r = api.post(
        f"/api/v1/kb-drafts/{draft['id']}/sources",
        json={
            "type": "web",
            "url": "HTTPS://Example.com:443/docs/?utm_source=x#intro",
            "crawl": {"max_pages": 7},
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    (source,) = r.json()["sources"]
    assert source["type"] == "web" and source["url"] == "https://example.com/docs/"  # the slash is kept
    crawl = source["crawl"]
    assert crawl["max_pages"] == 7 and crawl["max_depth"] == 3 and crawl["same_domain"] is True
    assert crawl["use_sitemap"] is True and crawl["respect_robots"] is True and crawl["engine"] == "builtin"
    stored = api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["sources"]
    assert [s["id"] for s in stored] == [source["id"]]
    report = api.post(f"/api/v1/kb-drafts/{draft['id']}/validate", headers=auth).json()
    assert report["is_valid"] is True and report["estimated_duration_minutes"] > 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"type": "web", "url": "ftp://example.com/file"}, "http"),
        ({"type": "web", "url": "not a url"}, "http"),
        ({"type": "web", "url": "http://127.0.0.1:8080/admin"}, "loopback"),
        ({"type": "web", "url": "http://169.254.169.254/latest/meta-data/"}, "link-local"),
        ({"type": "web", "url": "https://example.com", "crawl": {"max_pages": 0}}, "crawl.max_pages"),
        ({"type": "web", "url": "https://example.com", "crawl": {"maxPages": 5}}, "crawl.maxPages"),
        ({"type": "web", "url": "https://example.com", "crawl": {"engine": "firecrawl"}}, "FIRECRAWL_URL"),
    ],
    ids=["ftp", "garbage", "loopback", "metadata-ip", "zero-pages", "unknown-option", "firecrawl-unset"],
)
def test_a_bad_web_source_is_refused_with_a_clear_422_and_nothing_is_added(
    api: TestClient, auth: dict[str, str], body: dict[str, Any], needle: str
) -> None:
    draft = _draft(api, auth)
    r = api.post(f"/api/v1/kb-drafts/{draft['id']}/sources", json=body, headers=auth)
    err = _error(r, 422, "invalid_input")
    assert needle.lower() in err["message"].lower(), err
    assert api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["sources"] == []


def test_an_executable_upload_is_refused_with_415(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 200
    r = api.post(
        f"/api/v1/kb-drafts/{draft['id']}/sources",
        files=[("files", ("notes.txt", elf, "text/plain"))],
        headers=auth,
    )
    err = _error(r, 415, "unsupported_media_type")
    assert "ELF" in err["message"] or "executable" in err["message"]
    assert api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["sources"] == []


def test_a_path_in_an_upload_filename_is_reduced_to_a_plain_name_and_bytes_stay_in_blobs(
    api: TestClient, auth: dict[str, str]
) -> None:
    data_dir = api.app.state.runtime.settings.data_dir  # type: ignore[attr-defined]
    payload = b"# Secrets\n\nNothing to see here, only a markdown file with a hostile name.\n"
    draft = _draft(api, auth)
    r = api.post(
        f"/api/v1/kb-drafts/{draft['id']}/sources",
        files=[
            ("files", ("../../etc/passwd.md", payload, "text/markdown")),
            ("files", ("..\\..\\boot.ini.md", payload + b"2", "text/markdown")),
        ],
        headers=auth,
    )
    assert r.status_code == 201, r.text
    names = [s["filename"] for s in r.json()["sources"]]
    assert names == ["passwd.md", "boot.ini.md"]
    assert all("/" not in n and "\\" not in n and ".." not in n for n in names)
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    stray = [
        p
        for p in files
        if not p.name.startswith("lorebase.db") and "blobs" not in p.relative_to(data_dir).parts
    ]
    assert stray == []
    blobs = api.app.state.runtime.blobs  # type: ignore[attr-defined]  # files, or rows on PostgreSQL
    assert blobs.get(hashlib.sha256(payload).hexdigest()) == payload
    assert not any(p.name in ("passwd.md", "boot.ini.md") for p in data_dir.parent.rglob("*"))


def test_unusable_source_requests_are_refused_with_clear_errors(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth)
    url = f"/api/v1/kb-drafts/{draft['id']}/sources"
    err = _error(api.post(url, json={"type": "ftp", "url": "ftp://x"}, headers=auth), 422, "invalid_input")
    assert "ftp" in err["message"]
    _error(api.post(url, json={"type": "text", "documents": []}, headers=auth), 422, "invalid_input")
    err = _error(
        api.post(url, json={"type": "text", "documents": [{"text": "x", "colour": "red"}]}, headers=auth),
        422,
        "invalid_input",
    )
    assert any("colour" in d["field"] for d in err["details"])
    _error(
        api.post(url, content=b"hello", headers={**auth, "Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    _error(api.post(url, files=[("other", ("a.md", b"# A", "text/markdown"))], headers=auth), 422)
    assert api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["sources"] == []
    err = _error(api.post(f"/api/v1/kb-drafts/{draft['id']}/preview", headers=auth), 422, "invalid_input")
    assert "no sources" in err["message"]


def test_create_with_an_unknown_config_key_is_422(api: TestClient, auth: dict[str, str]) -> None:
    r = api.post(
        "/api/v1/kb-drafts", json={"name": "x", "config": {"chunking": {"chunk_sise": 10}}}, headers=auth
    )
    err = _error(r, 422, "invalid_input")
    assert any("chunk_sise" in d["field"] for d in err["details"])


# -- preview and validate -------------------------------------------------------------------------


def test_preview_gives_real_chunks_within_chunk_size_and_writes_no_rows(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth, config={"chunking": {"chunk_size": 48, "chunk_overlap": 8}})
    _add_text(api, auth, draft["id"])
    r = api.post(
        f"/api/v1/kb-drafts/{draft['id']}/sources",
        files=[("files", ("octopus.md", MARKDOWN, "text/markdown"))],
        headers=auth,
    )
    md_source = r.json()["sources"][0]["id"]
    r = api.post(f"/api/v1/kb-drafts/{draft['id']}/preview", json={"source_id": md_source}, headers=auth)
    assert r.status_code == 200, r.text
    preview = r.json()
    chunks = preview["chunks"]
    assert preview["source_id"] == md_source and preview["total_chunks"] == len(chunks) > 2
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    source_words = set(MARKDOWN.decode().split())
    for c in chunks:
        assert 0 < c["token_count"] <= 48
        assert c["token_count"] == len(tokenizer.encode(c["text"], add_special_tokens=False).ids)
        assert set(c["text"].split()) <= source_words, c["text"]
    joined = " ".join(c["text"] for c in chunks)
    assert "hemocyanin" in joined and "mimic octopus" in joined
    limited = api.post(
        f"/api/v1/kb-drafts/{draft['id']}/preview", json={"source_id": md_source, "limit": 2}, headers=auth
    ).json()
    assert limited["chunks"] == chunks[:2] and limited["total_chunks"] == len(chunks)
    # without a source id: the first source (the text record)
    first = api.post(f"/api/v1/kb-drafts/{draft['id']}/preview", headers=auth).json()
    assert [c["text"] for c in first["chunks"]] == [RECORD["text"]]
    assert _row_counts(api) == NOTHING


def test_preview_of_an_unknown_source_is_404(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    _add_text(api, auth, draft["id"])
    r = api.post(
        f"/api/v1/kb-drafts/{draft['id']}/preview",
        json={"source_id": "00000000-0000-0000-0000-000000000000"},
        headers=auth,
    )
    _error(r, 404, "not_found")


def _validate(api: TestClient, auth: dict[str, str], draft_id: str) -> dict[str, Any]:
    r = api.post(f"/api/v1/kb-drafts/{draft_id}/validate", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


def _error_fields(report: dict[str, Any]) -> list[str]:
    assert report["is_valid"] is False
    assert all(e["message"] for e in report["errors"])
    return [e["field"] for e in report["errors"]]


def test_validate_reports_a_draft_without_sources(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    assert _error_fields(_validate(api, auth, draft["id"])) == ["sources"]


def test_validate_reports_chunk_size_above_model_maximum(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth, config={"chunking": {"chunk_size": 512}})
    _add_text(api, auth, draft["id"])
    report = _validate(api, auth, draft["id"])
    assert _error_fields(report) == ["config.chunking.chunk_size"]
    assert "256" in report["errors"][0]["message"]


def test_validate_reports_an_unknown_embedding_model(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth, config={"embedding": {"model": "local:no-such-model"}})
    _add_text(api, auth, draft["id"])
    report = _validate(api, auth, draft["id"])
    assert _error_fields(report) == ["config.embedding.model"]
    assert "no-such-model" in report["errors"][0]["message"]


def test_validate_reports_an_unknown_vector_store(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth, config={"store": {"type": "milvus"}})
    _add_text(api, auth, draft["id"])
    report = _validate(api, auth, draft["id"])
    assert _error_fields(report) == ["config.store.type"]
    assert "milvus" in report["errors"][0]["message"]


def test_validate_reports_overlap_of_half_the_chunk_size_or_more(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth, config={"chunking": {"chunk_size": 100, "chunk_overlap": 50}})
    _add_text(api, auth, draft["id"])
    assert _error_fields(_validate(api, auth, draft["id"])) == ["config.chunking.chunk_overlap"]
    api.patch(
        f"/api/v1/kb-drafts/{draft['id']}", json={"config": {"chunking": {"chunk_overlap": 49}}}, headers=auth
    )
    report = _validate(api, auth, draft["id"])
    assert report["is_valid"] is True and report["errors"] == []


def test_finalize_of_an_invalid_draft_is_422_draft_invalid_and_creates_nothing(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth, config={"chunking": {"chunk_size": 512}})
    _add_text(api, auth, draft["id"])
    err = _error(api.post(f"/api/v1/kb-drafts/{draft['id']}/finalize", headers=auth), 422, "draft_invalid")
    assert [d["field"] for d in err["details"]] == ["config.chunking.chunk_size"]
    assert _row_counts(api) == NOTHING
    assert api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).status_code == 200  # still editable
    assert api.get("/api/v1/kbs", headers=auth).json()["total"] == 0


# -- auth, workspaces, unknown routes ----------------------------------------------------------------


def test_requests_without_a_valid_key_are_401_with_the_error_shape(
    api: TestClient, auth: dict[str, str]
) -> None:
    for path in ("/api/v1/kbs", "/api/v1/queue"):
        r = api.get(path)
        _error(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate") == "Bearer"
    _error(api.post("/api/v1/kb-drafts", json={"name": "x"}), 401, "unauthorized")
    _error(api.get("/api/v1/kbs", headers={"Authorization": "Bearer lb_not-a-real-key"}), 401, "unauthorized")
    _error(api.get("/api/v1/kbs", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "unauthorized")


def test_another_workspace_gets_404_for_this_workspaces_resources(
    api: TestClient, auth: dict[str, str]
) -> None:
    draft = _draft(api, auth)
    other_draft = _draft(api, auth)
    _add_text(api, auth, other_draft["id"])
    finalized = api.post(f"/api/v1/kb-drafts/{other_draft['id']}/finalize", headers=auth).json()
    kb_id, pipeline_id = finalized["kb_id"], finalized["pipeline_id"]
    assert wait_pipeline(api, auth, pipeline_id)["status"] == "completed"
    doc_id = api.get(f"/api/v1/kbs/{kb_id}/documents", headers=auth).json()["items"][0]["id"]

    key, _ = create_key(api.app.state.runtime.db, workspace="other")  # type: ignore[attr-defined]
    them = {"Authorization": f"Bearer {key}"}
    for method, path, body in (
        ("GET", f"/api/v1/kb-drafts/{draft['id']}", None),
        ("PATCH", f"/api/v1/kb-drafts/{draft['id']}", {"name": "mine now"}),
        ("DELETE", f"/api/v1/kb-drafts/{draft['id']}", None),
        ("POST", f"/api/v1/kb-drafts/{draft['id']}/validate", None),
        ("GET", f"/api/v1/kbs/{kb_id}", None),
        ("GET", f"/api/v1/kbs/{kb_id}/documents", None),
        ("POST", f"/api/v1/kbs/{kb_id}/documents", {"documents": [{"text": "intruder"}]}),
        ("DELETE", f"/api/v1/kbs/{kb_id}", None),
        ("GET", f"/api/v1/documents/{doc_id}", None),
        ("GET", f"/api/v1/documents/{doc_id}/chunks", None),
        ("GET", f"/api/v1/pipelines/{pipeline_id}", None),
        ("POST", f"/api/v1/pipelines/{pipeline_id}/retry", None),
        ("POST", f"/api/v1/kbs/{kb_id}/search", {"query": "mantis shrimp"}),
    ):
        r = api.request(method, path, json=body, headers=them)
        _error(r, 404, "not_found")
    assert api.get("/api/v1/kbs", headers=them).json() == {"items": [], "total": 0}
    _error(api.get(f"/api/v1/jobs?kb_id={kb_id}", headers=them), 404, "not_found")
    # untouched for the owner
    assert api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["name"] == "draft"
    kb = api.get(f"/api/v1/kbs/{kb_id}", headers=auth).json()
    assert kb["status"] == "ready" and kb["counts"]["documents"] == 1


def test_an_unknown_route_is_404_with_the_error_shape(api: TestClient, auth: dict[str, str]) -> None:
    _error(api.get("/api/v1/no-such-thing", headers=auth), 404, "not_found")
    _error(api.get("/api/v1/no-such-thing"), 404, "not_found")
