"""HTTP hardening, through the real app as a client would: per-key rate limits (429 with
``Retry-After``), CORS closed unless origins are configured, and the security headers on every
response (API JSON, errors, the dashboard)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from conftest import key_headers, make_settings, running_app
from lorebase.app import create_app
from lorebase.settings import LimitSettings, Settings
from lorebase.web.security import API_CSP, CSP

EVIL = "https://evil.example"
APP = "https://app.example"
RECORD = {"external_id": "mantis", "title": "Mantis shrimp", "text": "A mantis shrimp punches at 23 m/s."}
REDIS_URL = os.environ.get("LOREBASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


#: the limited app's 429s are held back this long (``limits.reject_delay_seconds``)
REJECT_DELAY = 0.3


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(tmp_path / "data", **overrides)


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TestClient]:
    """The app with small limits and no workers (nothing here needs a pipeline to run)."""
    limits = LimitSettings(
        search_per_minute=3, uploads_per_minute=2, finalize_per_minute=1, reject_delay_seconds=REJECT_DELAY
    )
    with running_app(_settings(tmp_path, limits=limits), workers=0) as client:
        yield client


def _assert_rate_limited(r: Any) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == "rate_limited"
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert body["error"]["details"]["retry_after"] == retry_after
    assert r.headers["x-content-type-options"] == "nosniff"


def _search(client: TestClient, headers: dict[str, str], kb_id: str) -> Any:
    return client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "mantis"}, headers=headers)


def test_search_is_limited_per_key_with_retry_after(limited: TestClient) -> None:
    auth = key_headers(limited)
    kb_id = str(uuid.uuid4())  # every authenticated request counts, answered 404 or not
    for _ in range(3):
        started = time.perf_counter()
        assert _search(limited, auth, kb_id).status_code == 404
        assert time.perf_counter() - started < REJECT_DELAY  # only rejections are held back
    started = time.perf_counter()
    _assert_rate_limited(_search(limited, auth, kb_id))
    # a client retrying at once, ignoring Retry-After, gets its 429 only after the delay
    assert time.perf_counter() - started >= REJECT_DELAY
    _assert_rate_limited(_search(limited, auth, str(uuid.uuid4())))  # per key, not per KB

    # authentication comes first: a bad key gets its 401, never the limited key's 429
    r = _search(limited, {"Authorization": "Bearer lb_not-a-key"}, kb_id)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    # another key of the same workspace, and a key of another workspace, have their own budget
    for other in (key_headers(limited), key_headers(limited, workspace="elsewhere")):
        assert _search(limited, other, kb_id).status_code == 404
    # the other limits are separate budgets: the limited key may still create and read
    assert limited.post("/api/v1/kb-drafts", json={"name": "d"}, headers=auth).status_code == 201
    assert limited.get("/api/v1/kbs", headers=auth).status_code == 200


def test_search_limit_on_a_real_kb(limited: TestClient) -> None:
    auth = key_headers(limited)
    draft = limited.post("/api/v1/kb-drafts", json={"name": "kb"}, headers=auth).json()
    r = limited.post(
        f"/api/v1/kb-drafts/{draft['id']}/sources", json={"type": "text", "documents": [RECORD]}, headers=auth
    )
    assert r.status_code == 201, r.text
    r = limited.post(f"/api/v1/kb-drafts/{draft['id']}/finalize", headers=auth)
    assert r.status_code == 202, r.text
    kb_id = r.json()["kb_id"]
    for _ in range(3):
        r = _search(limited, auth, kb_id)
        assert r.status_code == 200, r.text
    _assert_rate_limited(_search(limited, auth, kb_id))


def test_uploads_and_finalize_are_limited(limited: TestClient) -> None:
    auth = key_headers(limited)
    drafts = [
        limited.post("/api/v1/kb-drafts", json={"name": f"d{i}"}, headers=auth).json() for i in range(2)
    ]
    text = {"type": "text", "documents": [RECORD]}
    for draft in drafts:  # uploads_per_minute=2
        r = limited.post(f"/api/v1/kb-drafts/{draft['id']}/sources", json=text, headers=auth)
        assert r.status_code == 201, r.text
    # the draft sources, KB documents and KB sources endpoints share the one upload budget
    _assert_rate_limited(
        limited.post(f"/api/v1/kb-drafts/{drafts[0]['id']}/sources", json=text, headers=auth)
    )
    kb_id = str(uuid.uuid4())
    _assert_rate_limited(
        limited.post(f"/api/v1/kbs/{kb_id}/documents", json={"documents": [RECORD]}, headers=auth)
    )
    _assert_rate_limited(
        limited.post(
            f"/api/v1/kbs/{kb_id}/sources", json={"type": "web", "url": "https://a.example/"}, headers=auth
        )
    )
    # finalize_per_minute=1; a 429 sent with an Idempotency-Key is not stored as that key's answer
    r = limited.post(f"/api/v1/kb-drafts/{drafts[0]['id']}/finalize", headers=auth)
    assert r.status_code == 202, r.text
    idem = {**auth, "Idempotency-Key": "finalize-second"}
    _assert_rate_limited(limited.post(f"/api/v1/kb-drafts/{drafts[1]['id']}/finalize", headers=idem))
    r = limited.post(f"/api/v1/kb-drafts/{drafts[1]['id']}/finalize", headers=idem)
    assert r.status_code == 429 and "idempotent-replayed" not in r.headers
    # another key may still upload and finalize
    other = key_headers(limited)
    r = limited.post(f"/api/v1/kb-drafts/{drafts[1]['id']}/finalize", headers=other)
    assert r.status_code == 202, r.text


def test_a_limit_of_zero_turns_it_off(tmp_path: Path) -> None:
    limits = LimitSettings(search_per_minute=0, uploads_per_minute=0, finalize_per_minute=0)
    with running_app(_settings(tmp_path, limits=limits), workers=0) as client:
        auth = key_headers(client)
        kb_id = str(uuid.uuid4())
        for _ in range(25):
            assert _search(client, auth, kb_id).status_code == 404
            r = client.post(f"/api/v1/kbs/{kb_id}/documents", json={"documents": [RECORD]}, headers=auth)
            assert r.status_code == 404


def test_processes_sharing_redis_share_the_counts(tmp_path: Path) -> None:
    """The scaled mode: two API apps (as two processes would) on one Redis count together."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"lbtest-{uuid.uuid4().hex[:16]}"
    settings = _settings(
        tmp_path,
        redis_url=REDIS_URL,
        queue_prefix=prefix,
        limits=LimitSettings(search_per_minute=3, reject_delay_seconds=0),
    )
    try:
        with (
            TestClient(create_app(settings, workers=0)) as one,
            TestClient(create_app(settings, workers=0)) as two,
        ):
            auth = key_headers(one)
            kb_id = str(uuid.uuid4())
            for client_ in (one, two, one):
                assert _search(client_, auth, kb_id).status_code == 404
            _assert_rate_limited(_search(two, auth, kb_id))
            _assert_rate_limited(_search(one, auth, kb_id))
        assert list(client.scan_iter(match=f"{prefix}:ratelimit*"))  # the counters live in Redis
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


# -- CORS -------------------------------------------------------------------------------------------


def _preflight(client: TestClient, origin: str, path: str = "/api/v1/kbs") -> Any:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_is_closed_by_default(tmp_path: Path) -> None:
    with running_app(_settings(tmp_path), workers=0) as client:
        auth = key_headers(client)
        r = _preflight(client, EVIL)
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-headers" not in r.headers
        r = client.get("/api/v1/kbs", headers={**auth, "Origin": EVIL})
        assert r.status_code == 200
        assert not any(h.startswith("access-control-") for h in r.headers)


def test_cors_opens_to_the_configured_origins_only(tmp_path: Path) -> None:
    settings = _settings(tmp_path, cors_origins=f"{APP}, https://other.example")
    with running_app(settings, workers=0) as client:
        auth = key_headers(client)
        r = _preflight(client, APP)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == APP
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in r.headers
        r = client.get("/api/v1/kbs", headers={**auth, "Origin": APP})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()

        r = _preflight(client, EVIL)
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = client.get("/api/v1/kbs", headers={**auth, "Origin": EVIL})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# -- security headers -------------------------------------------------------------------------------


def _assert_api_headers(r: Any) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["content-security-policy"] == API_CSP


def test_security_headers_on_api_responses_errors_and_the_dashboard(tmp_path: Path) -> None:
    with running_app(_settings(tmp_path), workers=0) as client:
        auth = key_headers(client)
        ok = client.get("/api/v1/kbs", headers=auth)
        not_found = client.get(f"/api/v1/kbs/{uuid.uuid4()}", headers=auth)
        unauthorized = client.get("/api/v1/kbs")
        invalid = client.post("/api/v1/kb-drafts", json={"name": 5}, headers=auth)
        for r, status in ((ok, 200), (not_found, 404), (unauthorized, 401), (invalid, 422)):
            assert r.status_code == status, r.text
            assert r.headers["content-type"].startswith("application/json")
            _assert_api_headers(r)
            assert r.headers["cache-control"] == "no-store"  # keys and data: never cached

        health = client.get("/healthz")  # outside /api: no forced no-store, same strict CSP
        _assert_api_headers(health)
        assert "no-store" not in health.headers.get("cache-control", "")

        page = client.get("/login")  # the dashboard keeps its own policy
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"

        docs = client.get("/docs")  # Swagger UI loads its scripts from a CDN: no CSP there
        assert docs.status_code == 200
        assert "content-security-policy" not in docs.headers
        assert docs.headers["x-content-type-options"] == "nosniff"


# -- inputs that once answered 500 (found by .ci/schemathesis) ----------------------------------------


def test_parameters_no_database_can_take_answer_422(tmp_path: Path) -> None:
    with running_app(_settings(tmp_path), workers=0) as client:
        auth = key_headers(client)
        huge = "7768108878444752253883523476377042944"
        for url in (
            f"/api/v1/documents/{uuid.uuid4()}/chunks?offset={huge}",
            f"/api/v1/kbs?offset={huge}",
            f"/api/v1/kbs?offset={'9' * 5000}",  # past int()'s 4300-digit limit too
            f"/api/v1/jobs?limit=10&offset=-{huge}",
            "/api/v1/kbs/abc%00def",
            "/api/v1/jobs?status=queued%00",
        ):
            r = client.get(url, headers=auth)
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"]["code"] == "invalid_input"
            _assert_api_headers(r)
        assert client.get("/api/v1/kbs?offset=9223372036854775807", headers=auth).status_code == 200
        r = client.get(f"/api/v1/pipelines/{uuid.uuid4()}/events", headers={**auth, "Last-Event-ID": huge})
        assert r.status_code == 422, r.text


def test_strings_no_database_can_store_answer_422_but_text_content_is_cleaned(tmp_path: Path) -> None:
    """NUL characters (PostgreSQL text and JSON refuse them) and lone surrogates in names,
    metadata, config, queries: 422. A text record's ``text`` is content for the pipeline, which
    drops control characters, as it does from an uploaded file's text."""
    with running_app(_settings(tmp_path), workers=0) as client:
        auth = key_headers(client)
        draft = client.post("/api/v1/kb-drafts", json={"name": "d"}, headers=auth).json()
        for path, body in (
            ("/api/v1/kb-drafts", {"name": "a\u0000b"}),
            ("/api/v1/kb-drafts", {"name": "a", "config": {"chunking": {"strategy\u0000": 1}}}),
            ("/api/v1/kb-drafts", {"name": "a", "description": "\ud800"}),
            (
                f"/api/v1/kb-drafts/{draft['id']}/sources",
                {"type": "text", "documents": [{"text": "t", "metadata": {"k": ["\u0000"]}}]},
            ),
            (
                f"/api/v1/kb-drafts/{draft['id']}/sources",
                {"type": "text", "documents": [{"text": "t", "title": "\u0000"}]},
            ),
            (f"/api/v1/kbs/{uuid.uuid4()}/search", {"query": "oct\u0000opus"}),
            (f"/api/v1/kbs/{uuid.uuid4()}/search", {"query": "octopus", "filters": {"a": "\udc00"}}),
        ):
            r = client.post(
                path, content=json.dumps(body), headers={**auth, "Content-Type": "application/json"}
            )
            assert r.status_code == 422, (path, body, r.text)
            assert r.json()["error"]["code"] == "invalid_input"
        text = {"type": "text", "documents": [{"text": "Octopus\u0000 arms taste.", "title": "t"}]}
        r = client.post(f"/api/v1/kb-drafts/{draft['id']}/sources", json=text, headers=auth)
        assert r.status_code == 201, r.text


def test_a_malformed_multipart_body_is_a_400(tmp_path: Path) -> None:
    with running_app(_settings(tmp_path), workers=0) as client:
        auth = key_headers(client)
        draft = client.post("/api/v1/kb-drafts", json={"name": "d"}, headers=auth).json()
        boundary = "0d37f771f3609e9baf6be26654101f5f"
        r = client.post(
            f"/api/v1/kb-drafts/{draft['id']}/sources",
            content=f"--{boundary}\r\nTrue--{boundary}--\r\n".encode(),
            headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "bad_request"


def test_the_openapi_document_is_self_contained(tmp_path: Path) -> None:
    with running_app(_settings(tmp_path), workers=0) as client:
        schema = client.get("/openapi.json").json()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            assert "$defs" not in node
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    prefix = "#/components/schemas/"
    assert refs and all(
        r.startswith(prefix) and r[len(prefix) :] in schema["components"]["schemas"] for r in refs
    )
    assert "TextRecord" in schema["components"]["schemas"]
