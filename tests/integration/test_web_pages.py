"""The dashboard's pages over the real app and database: security headers, sign-in and its
redirects, CSRF on cookie-authenticated API calls, escaping, and the query log."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from conftest import finalize_draft, key_headers, running_app
from lorebase.api.deps import SESSION_COOKIE
from lorebase.jobs.scheduler import Scheduler
from lorebase.settings import Settings
from lorebase.tasks import REGISTRY
from lorebase.web.security import CSP

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
PAGES = ("/", "/kbs/new", "/search", "/jobs")


@pytest.fixture
def web(settings: Settings) -> Iterator[TestClient]:
    """The app without workers: pages and sign-in need no background work."""
    with running_app(settings, workers=0) as client:
        yield client


@pytest.fixture
def key(web: TestClient) -> str:
    return key_headers(web)["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def signed_in(web: TestClient, key: str) -> TestClient:
    r = web.get("/login", params={"token": key, "next": "/jobs"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/jobs"
    return web


def _kb(client: TestClient, key: str, name: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    body = finalize_draft(client, headers, name=name, records=[{"title": "t", "text": "plain text"}])
    return str(body["kb_id"])


def test_sign_in_link_sets_an_httponly_strict_cookie_and_redirects(web: TestClient, key: str) -> None:
    r = web.get("/login", params={"token": key, "next": "/search?kb=1"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/search?kb=1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={key};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie


def test_every_dashboard_response_carries_the_csp_and_no_inline_script(
    signed_in: TestClient, key: str
) -> None:
    kb_id = _kb(signed_in, key, "kb")
    for path in (*PAGES, f"/kbs/{kb_id}", f"/kbs/{kb_id}/queries", "/login", "/static/app.js"):
        r = signed_in.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        if path.startswith("/static"):
            continue
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", r.text) == [], path  # no inline script
        assert not re.search(r"\son[a-z]+\s*=", r.text), path  # no inline event handler
        assert not re.search(r"\sstyle\s*=", r.text), path  # no inline style (CSP would drop it)
    # the JSON API gets its own, stricter policy (test_http_hardening.py), not the dashboard's
    assert signed_in.get("/api/v1/kbs").headers["content-security-policy"] != CSP


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"]
)
def test_login_refuses_to_redirect_off_site(web: TestClient, key: str, target: str) -> None:
    r = web.get("/login", params={"token": key, "next": target}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    r = web.post("/login", data={"key": key, "next": target}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_login_form_posts_the_key_and_a_wrong_key_sets_no_cookie(web: TestClient, key: str) -> None:
    r = web.post("/login", data={"key": "lb_wrong", "next": "/jobs"}, follow_redirects=False)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert "not valid" in r.text
    r = web.get("/login", params={"token": "lb_wrong"}, follow_redirects=False)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    r = web.post("/login", data={"key": key, "next": "/jobs"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/jobs"
    assert web.get("/jobs", follow_redirects=False).status_code == 200


@pytest.mark.parametrize("path", [*PAGES, "/kbs/some-id", "/kbs/some-id/queries"])
def test_pages_without_a_session_redirect_to_login_with_next(web: TestClient, path: str) -> None:
    r = web.get(path, params={"x": "1"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/login?next={quote(path + '?x=1', safe='/')}"
    web.cookies.set(SESSION_COOKIE, "lb_revoked_or_wrong")
    assert web.get(path, follow_redirects=False).status_code == 303


def test_logout_clears_the_session(signed_in: TestClient) -> None:
    r = signed_in.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert signed_in.get("/", follow_redirects=False).status_code == 303


def test_cookie_authenticated_unsafe_api_call_needs_the_csrf_header(signed_in: TestClient, key: str) -> None:
    r = signed_in.post("/api/v1/kb-drafts", json={"name": "forged"})
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "forbidden" and "X-Requested-With" in error["message"]
    assert set(error) == {"code", "message", "details"}
    r = signed_in.post("/api/v1/kb-drafts", json={"name": "x"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    # reads are safe; our scripts' header, or our own origin, pass; Bearer clients are unaffected
    assert signed_in.get("/api/v1/kbs").status_code == 200
    assert (
        signed_in.post(
            "/api/v1/kb-drafts", json={"name": "x"}, headers={"X-Requested-With": "lorebase"}
        ).status_code
        == 201
    )
    assert (
        signed_in.post(
            "/api/v1/kb-drafts", json={"name": "x"}, headers={"Origin": "http://testserver"}
        ).status_code
        == 201
    )
    signed_in.cookies.clear()
    assert (
        signed_in.post(
            "/api/v1/kb-drafts", json={"name": "x"}, headers={"Authorization": f"Bearer {key}"}
        ).status_code
        == 201
    )


def test_a_hostile_kb_name_is_shown_as_text(signed_in: TestClient, key: str) -> None:
    kb_id = _kb(signed_in, key, HOSTILE)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
    for path in ("/", f"/kbs/{kb_id}", "/search", f"/kbs/{kb_id}/queries"):
        html = signed_in.get(path).text
        assert HOSTILE not in html and "<script>alert" not in html, path
        assert escaped in html, path


def test_query_log_lists_queries_and_negative_share_per_day_in_the_workspace_only(
    signed_in: TestClient, key: str
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    kb_id = _kb(signed_in, key, "log")
    ids = []
    for query in ("first", HOSTILE):  # keyword mode: logged without the embedding model
        r = signed_in.post(
            f"/api/v1/kbs/{kb_id}/search", json={"query": query, "mode": "keyword"}, headers=headers
        )
        assert r.status_code == 200, r.text
        ids.append(r.json()["query_id"])
    r = signed_in.post(f"/api/v1/queries/{ids[1]}/feedback", json={"feedback": "negative"}, headers=headers)
    assert r.status_code == 200, r.text
    log = signed_in.get(f"/api/v1/kbs/{kb_id}/queries", headers=headers).json()
    assert log["total"] == 2
    assert [(q["id"], q["feedback"]) for q in log["items"]] == [(ids[1], "negative"), (ids[0], None)]
    assert {"latency_ms", "result_count", "created_at", "mode"} <= set(log["items"][0])
    only = signed_in.get(f"/api/v1/kbs/{kb_id}/queries?feedback=negative", headers=headers).json()
    assert [q["id"] for q in only["items"]] == [ids[1]]
    (day,) = signed_in.get(f"/api/v1/kbs/{kb_id}/queries/daily", headers=headers).json()["items"]
    assert (day["queries"], day["rated"], day["negative"], day["negative_share"]) == (2, 1, 1, 1.0)
    page = signed_in.get(f"/kbs/{kb_id}/queries").text
    assert "&lt;script&gt;alert(1)" in page and "negative" in page and "100 %" in page
    other = key_headers(signed_in, workspace="other")
    assert signed_in.get(f"/api/v1/kbs/{kb_id}/queries", headers=other).status_code == 404
    assert signed_in.get(f"/api/v1/kbs/{kb_id}/queries/daily", headers=other).status_code == 404


def test_a_documents_title_links_to_its_original_for_the_signed_in_browser(
    signed_in: TestClient, key: str
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    upload = ("files", ("a<b>.md", b"# Zymurgy\n\nnotes on brewing", "text/markdown"))
    body = finalize_draft(signed_in, headers, name="originals", files=[upload])
    (doc,) = signed_in.get(f"/api/v1/kbs/{body['kb_id']}/documents", headers=headers).json()["items"]
    html = signed_in.get(f"/kbs/{body['kb_id']}").text
    href = f"/api/v1/documents/{doc['id']}/original"
    assert f'<a href="{href}" rel="noopener noreferrer"' in html and "a<b>" not in html
    r = signed_in.get(href, follow_redirects=False)  # the session cookie, no Bearer header
    assert r.status_code == 302
    r = signed_in.get(r.headers["location"])
    assert r.status_code == 200 and r.content == b"# Zymurgy\n\nnotes on brewing"
    assert r.headers["content-disposition"].startswith("attachment;")


def test_the_jobs_page_lists_the_periodic_tasks_with_their_last_and_next_run(signed_in: TestClient) -> None:
    runtime = signed_in.app.state.runtime  # type: ignore[attr-defined]
    periodic = [s for s in REGISTRY if s.every is not None]

    def rows() -> dict[str, list[str]]:
        page = signed_in.get("/jobs").text
        assert f"Periodic tasks ({len(periodic)})" in page
        found = re.findall(r'<tr data-task="([a-z_]+)">(.*?)</tr>', page, re.S)
        return {name: re.findall(r"<td>(.*?)</td>", row, re.S) for name, row in found}

    before = rows()
    assert sorted(before) == sorted(s.name for s in periodic)
    shown = {3600.0: "1h", 60.0: "1m"}  # the defaults: cleanup_seconds, refresh_seconds
    for spec in periodic:
        name, summary, every, last, _ = before[spec.name]
        assert spec.every is not None
        assert (name, every, last) == (spec.name, shown[spec.every(runtime.settings)], "never")
        assert summary == html.escape(spec.summary, quote=False)
    now = datetime.now(UTC)
    Scheduler(runtime.db, runtime.queue, REGISTRY, runtime.settings).tick(now)
    after = rows()
    for spec in periodic:
        assert spec.every is not None
        period = spec.every(runtime.settings)
        nxt = datetime.fromtimestamp((now.timestamp() // period + 1) * period, tz=UTC)
        assert after[spec.name][3] == f"{now:%Y-%m-%d %H:%M:%S}"
        assert after[spec.name][4] == f"{nxt:%Y-%m-%d %H:%M:%S}"
