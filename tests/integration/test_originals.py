"""``GET /api/v1/documents/{id}/original``: a redirect to a signed, expiring link that serves the
uploaded bytes without an API key, as a download in a sandbox (DESIGN.md §7). On the local and
database stores lorebase signs the link itself; on s3 it is the bucket's presigned URL (moto)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update

from conftest import finalize_draft, key_headers, make_settings, running_app
from lorebase.db.models import Document
from lorebase.settings import S3Settings
from support.moto_s3 import s3_settings, shared_server
from support.testblobs import ON_S3

HTML = b"<html><body><script>alert('x')</script>Zymurgy notes</body></html>"


@contextmanager
def _app(tmp_path: Path, **overrides: Any) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with running_app(make_settings(tmp_path / "data", **overrides), workers=0) as client:
        yield client, key_headers(client)


def _upload(client: TestClient, headers: dict[str, str], name: str = "Zymurgy notes é.html") -> str:
    got = finalize_draft(client, headers, files=[("files", (name, HTML, "text/html"))])
    r = client.get(f"/api/v1/kbs/{got['kb_id']}/documents", headers=headers)
    (doc,) = r.json()["items"]
    assert doc["has_original"] is True
    return str(doc["id"])


def _location(client: TestClient, headers: dict[str, str], doc_id: str) -> str:
    r = client.get(f"/api/v1/documents/{doc_id}/original", headers=headers, follow_redirects=False)
    assert r.status_code == 302, r.text
    return r.headers["location"]


def test_the_signed_link_serves_the_original_as_a_sandboxed_download_without_a_key(tmp_path: Path) -> None:
    with _app(tmp_path) as (client, headers):
        doc_id = _upload(client, headers)
        location = _location(client, headers, doc_id)
        if ON_S3:  # LOREBASE_TEST_BLOB_STORE=s3: the bucket's own link
            r = httpx.get(location)
        else:
            assert location.startswith(f"/api/v1/originals/{doc_id}?expires=")
            assert list(parse_qs(urlsplit(location).query)) == ["expires", "sig"]  # sig last
            r = client.get(location)  # no Authorization header
        assert r.status_code == 200 and r.content == HTML
        disposition = r.headers["content-disposition"]
        assert (
            disposition.startswith("attachment;")
            and "filename*=UTF-8''Zymurgy%20notes%20%C3%A9.html" in disposition
        )
        if not ON_S3:
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "sandbox" in r.headers["content-security-policy"]
            assert "private" in r.headers["cache-control"]


def test_a_tampered_or_moved_signature_is_refused(tmp_path: Path) -> None:
    with _app(tmp_path, blob_store="local") as (client, headers):
        doc_id, other_id = _upload(client, headers), _upload(client, headers, "other.html")
        location = _location(client, headers, doc_id)
        tampered = location[:-1] + ("0" if location[-1] != "0" else "1")
        assert client.get(tampered).status_code == 403
        later = location.replace("expires=", "expires=9")  # a longer life is another message
        assert client.get(later).status_code == 403
        moved = location.replace(doc_id, other_id)  # a signature of another document
        r = client.get(moved)
        assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_signature"
        assert client.get(location.split("&sig=")[0] + "&sig=" + "é" * 64).status_code == 403
        assert client.get(location.replace(doc_id, str(uuid.uuid4()))).status_code == 403


def test_a_link_expires(tmp_path: Path) -> None:
    with _app(tmp_path, blob_store="local", signed_url_ttl_seconds=1) as (client, headers):
        location = _location(client, headers, _upload(client, headers))
        assert client.get(location).status_code == 200
        time.sleep(2.1)
        r = client.get(location)
        assert r.status_code == 403 and r.json()["error"]["code"] == "link_expired"
        assert "expired" in r.json()["error"]["message"]


def test_another_workspaces_document_is_not_found_and_a_removed_original_is_gone(tmp_path: Path) -> None:
    with _app(tmp_path) as (client, headers):
        doc_id = _upload(client, headers)
        other = key_headers(client, "elsewhere")
        r = client.get(f"/api/v1/documents/{doc_id}/original", headers=other, follow_redirects=False)
        assert r.status_code == 404
        assert client.get(f"/api/v1/documents/{doc_id}/original", follow_redirects=False).status_code == 401
        location = _location(client, headers, doc_id)
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        with runtime.db.session() as s:  # what retention does to an original past its days
            s.execute(update(Document).where(Document.id == doc_id).values(blob_key=None))
        r = client.get(f"/api/v1/documents/{doc_id}/original", headers=headers, follow_redirects=False)
        assert r.status_code == 410 and "no longer kept" in r.json()["error"]["message"]
        if location.startswith("/"):
            assert client.get(location).status_code == 403  # its link is dead too


def test_on_s3_the_original_redirects_to_the_bucket(tmp_path: Path) -> None:
    url, bucket = shared_server()
    s3 = S3Settings(**s3_settings(url, bucket, f"orig-{uuid.uuid4().hex[:8]}/"))
    with _app(tmp_path, blob_store="s3", s3=s3, signed_url_ttl_seconds=120) as (client, headers):
        location = _location(client, headers, _upload(client, headers))
        assert location.startswith(f"{url}/{bucket}/orig-") and "X-Amz-Expires=120" in location
        r = httpx.get(location)
        assert r.status_code == 200 and r.content == HTML
        assert r.headers["content-disposition"].startswith("attachment;")
