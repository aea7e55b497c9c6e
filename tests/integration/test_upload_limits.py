"""Upload limits through the HTTP API: streamed multipart with a per-file cap (413 before the body
is buffered), hostile filenames kept as sanitized metadata only, per-workspace quotas, and a 2 GB
upload refused at the cap by a real ``lorebase serve`` without being buffered."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import make_settings, running_app
from lorebase.settings import LimitSettings
from support import testdb
from support.live import serve_process

BOUNDARY = "lorebase-test-boundary"


def multipart(*parts: tuple[str, bytes | None, bytes]) -> bytes:
    """A multipart body built byte by byte: (field name, raw filename or None, content)."""
    out = b""
    for name, filename, content in parts:
        disp = f'form-data; name="{name}"'.encode()
        if filename is not None:
            disp += b'; filename="' + filename + b'"'
        out += b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disp + b"\r\n"
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    return out + b"--" + BOUNDARY.encode() + b"--\r\n"


def post_multipart(client: TestClient, url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    ctype = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return client.post(url, content=body, headers={**headers, **ctype})


def error_of(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def files_in(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def client_for(data_dir: Path, **overrides: Any) -> Any:
    return running_app(make_settings(data_dir, **overrides), workers=0)


def new_key(client: TestClient, workspace: str = "default") -> dict[str, str]:
    from lorebase.services.auth import create_key

    key, _ = create_key(client.app.state.runtime.db, workspace=workspace)  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {key}"}


def draft(client: TestClient, auth: dict[str, str]) -> str:
    r = client.post("/api/v1/kb-drafts", json={"name": "d"}, headers=auth)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


HOSTILE = [
    (b"../../etc/passwd", "passwd"),
    (b"..\\x", "x"),
    (b"/abs/path", "path"),
    (b"", "upload"),
    (b"C:\\Windows\\win.ini", "win.ini"),
    (b"a" * 296 + b".txt", "a" * 251 + ".txt"),
    (b"nul\x00and\x01ctl\x7f.txt", "nul_and_ctl_.txt"),
    ("évil\u202etxt.md".encode(), "évil_txt.md"),
    ("日本語/../名前.md".encode(), "名前.md"),
]


def test_hostile_filenames_are_stored_under_generated_names(tmp_path: Path, app_dir: Path) -> None:
    outside = tmp_path / "outside"  # a sibling of the data dir: must stay as it is
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "marker").write_text("untouched")
    before_tmp, before_parent = tree(tmp_path) - {"data"}, set(os.listdir(tmp_path.parent))
    with client_for(app_dir) as client:
        auth = new_key(client)
        before_tmp = {p for p in tree(tmp_path) if not p.startswith("data")}
        draft_id = draft(client, auth)
        parts = [("files", raw, f"upload {i}: {raw!r}\n".encode()) for i, (raw, _) in enumerate(HOSTILE)]
        r = post_multipart(client, f"/api/v1/kb-drafts/{draft_id}/sources", auth, multipart(*parts))
        assert r.status_code == 201, r.text
        names = [s["filename"] for s in r.json()["sources"]]
        assert names == [expected for _, expected in HOSTILE]
        assert all(len(n) <= 255 for n in names)
        # the same names through POST /kbs/{id}/documents, as stored documents
        r = client.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=auth)
        assert r.status_code == 202, r.text
        kb_id = r.json()["kb_id"]
        parts = [("files", raw, f"again {i}\n".encode()) for i, (raw, _) in enumerate(HOSTILE)]
        r = post_multipart(client, f"/api/v1/kbs/{kb_id}/documents", auth, multipart(*parts))
        assert r.status_code == 202, r.text
        assert [d["filename"] for d in r.json()["documents"]] == [e for _, e in HOSTILE]
        r = client.get(f"/api/v1/kbs/{kb_id}/documents?limit=100", headers=auth)
        stored = sorted(d["filename"] for d in r.json()["items"])
        assert stored == sorted([e for _, e in HOSTILE] * 2)
        blob_dir = client.app.state.runtime.settings.blob_dir  # type: ignore[attr-defined]
        on_disk = files_in(blob_dir)
    # nothing outside the data dir: the sibling marker, the tmp tree, the parent listing
    assert (outside / "etc" / "marker").read_text() == "untouched"
    assert tree(outside) == {"etc", "etc/marker"}
    assert {p for p in tree(tmp_path) if not p.startswith("data")} == before_tmp
    assert set(os.listdir(tmp_path.parent)) - before_parent <= {tmp_path.name}
    # inside it: blobs under generated (sha256) names, the database, nothing else (no spool left)
    for rel in files_in(app_dir):
        assert rel.startswith("blobs/") or rel.startswith("lorebase.db"), rel
    if not testdb.ON_POSTGRES:
        assert len(on_disk) == 2 * len(HOSTILE)
        assert all(re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{64}", rel) for rel in on_disk), on_disk
    assert not files_in(app_dir / "tmp")


def test_a_file_over_the_cap_is_refused_whole_request_and_nothing_is_kept(app_dir: Path) -> None:
    with client_for(app_dir, max_upload_bytes=64 * 1024) as client:
        auth = new_key(client)
        draft_id = draft(client, auth)
        url = f"/api/v1/kb-drafts/{draft_id}/sources"
        small = ("files", b"ok.txt", b"small enough\n")
        big = ("files", b"../huge.txt", b"x" * (64 * 1024 + 1))
        err = error_of(post_multipart(client, url, auth, multipart(small, big)), 413, "payload_too_large")
        assert "'huge.txt'" in err["message"] and "65536" in err["message"], err
        assert err["details"] == {"filename": "huge.txt", "limit_bytes": 65536}
        assert client.get(f"/api/v1/kb-drafts/{draft_id}", headers=auth).json()["sources"] == []
        assert not files_in(app_dir / "blobs") and not files_in(app_dir / "tmp")
        # exactly at the cap: accepted
        exact = ("files", b"exact.txt", b"y" * (64 * 1024))
        r = post_multipart(client, url, auth, multipart(exact))
        assert r.status_code == 201 and r.json()["sources"][0]["size_bytes"] == 65536, r.text
        # the same through httpx's own multipart encoding and the KB endpoint's JSON cap
        r = client.post(url, files=[("files", ("b.txt", b"z" * 70000, "text/plain"))], headers=auth)
        error_of(r, 413, "payload_too_large")
        # too many files in one request
        many = [("files", f"f{i}.txt".encode(), b"t%d\n" % i) for i in range(1001)]
        err = error_of(post_multipart(client, url, auth, multipart(*many)), 413, "payload_too_large")
        assert "more than 1000 files" in err["message"]
        assert len(client.get(f"/api/v1/kb-drafts/{draft_id}", headers=auth).json()["sources"]) == 1
        # no files, or 'files' as a text field: 422 as before
        error_of(post_multipart(client, url, auth, multipart(("note", None, b"hi"))), 422, "invalid_input")
        error_of(post_multipart(client, url, auth, multipart(("files", None, b"hi"))), 422, "invalid_input")
        # a huge text field is refused, not buffered
        huge_field = ("note", None, b"n" * (65 * 1024))
        error_of(post_multipart(client, url, auth, multipart(huge_field, small)), 413, "payload_too_large")
        # a JSON body far over the caps (JSON: one file's worth; multipart: 10 files' + 1 MiB)
        cap = 64 * 1024 * 10 + 1024 * 1024
        record = {"type": "text", "documents": [{"text": "j" * (cap + 10)}]}
        r = client.post(url, content=json.dumps(record), headers={**auth, "Content-Type": "application/json"})
        error_of(r, 413, "payload_too_large")
        # an Idempotency-Key request is spooled to disk for its fingerprint, under the same caps
        r = post_multipart(client, url, {**auth, "Idempotency-Key": "k1"}, multipart(small, big))
        error_of(r, 413, "payload_too_large")
        r = post_multipart(client, url, {**auth, "Idempotency-Key": "k2"}, multipart(small))
        assert r.status_code == 201, r.text
        again = post_multipart(client, url, {**auth, "Idempotency-Key": "k2"}, multipart(small))
        assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
        assert again.json() == r.json()
        assert len(client.get(f"/api/v1/kb-drafts/{draft_id}", headers=auth).json()["sources"]) == 2
        assert not files_in(app_dir / "tmp")


def test_json_bodies_are_capped_at_one_file_size_declared_or_streamed(app_dir: Path) -> None:
    with client_for(app_dir, max_upload_bytes=64 * 1024) as client:
        auth = new_key(client)
        declared = client.post("/api/v1/kb-drafts", json={"name": "x" * (70 * 1024)}, headers=auth)
        assert error_of(declared, 413, "payload_too_large")["details"] == {"limit_bytes": 64 * 1024}
        d = draft(client, auth)

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"type": "text", "documents": [{"text": "'
            for _ in range(70):
                yield b"a" * 1024
            yield b'"}]}'

        streamed = client.post(
            f"/api/v1/kb-drafts/{d}/sources",
            content=chunked(),
            headers={**auth, "Content-Type": "application/json"},
        )
        error_of(streamed, 413, "payload_too_large")
        assert client.get(f"/api/v1/kb-drafts/{d}", headers=auth).json()["sources"] == []
        ok = client.post(
            f"/api/v1/kb-drafts/{d}/sources",
            json={"type": "text", "documents": [{"text": "a" * (60 * 1024)}]},
            headers=auth,
        )
        assert ok.status_code == 201, ok.text


def _doc_count(client: TestClient) -> int:
    from sqlalchemy import func, select

    from lorebase.db.models import Document

    with client.app.state.runtime.db.read_session() as s:  # type: ignore[attr-defined]
        return int(s.execute(select(func.count()).select_from(Document)).scalar_one())


def test_workspace_document_quota(app_dir: Path) -> None:
    limits = LimitSettings(workspace_max_documents=3, workspace_max_bytes=0)
    with client_for(app_dir, limits=limits) as client:
        auth = new_key(client)
        a, b = draft(client, auth), draft(client, auth)
        text = {"type": "text", "documents": [{"external_id": "r1", "text": "one"}, {"text": "two"}]}
        assert client.post(f"/api/v1/kb-drafts/{a}/sources", json=text, headers=auth).status_code == 201
        blobs_before = files_in(app_dir / "blobs")
        files = multipart(("files", b"f1.txt", b"new one\n"), ("files", b"f2.txt", b"new two\n"))
        err = error_of(
            post_multipart(client, f"/api/v1/kb-drafts/{a}/sources", auth, files), 413, "workspace_quota"
        )
        assert err["message"].startswith("workspace quota: 4 of 3 documents"), err
        assert files_in(app_dir / "blobs") == blobs_before  # nothing stored
        assert len(client.get(f"/api/v1/kb-drafts/{a}", headers=auth).json()["sources"]) == 1
        assert client.post(f"/api/v1/kb-drafts/{b}/sources", json=text, headers=auth).status_code == 201
        r = client.post(f"/api/v1/kb-drafts/{a}/finalize", headers=auth)
        assert r.status_code == 202, r.text
        kb_id = r.json()["kb_id"]
        # finalize checks again: the workspace now holds 2, draft b would add 2
        err = error_of(client.post(f"/api/v1/kb-drafts/{b}/finalize", headers=auth), 413, "workspace_quota")
        assert "workspace quota: 4 of 3 documents" in err["message"]
        assert client.get(f"/api/v1/kb-drafts/{b}", headers=auth).status_code == 200  # kept
        assert client.get("/api/v1/kbs", headers=auth).json()["total"] == 1
        # an existing KB: unchanged re-sends add nothing and pass; one new fits; then full
        same = {"documents": [{"external_id": "r1", "text": "one"}]}
        r = client.post(f"/api/v1/kbs/{kb_id}/documents", json=same, headers=auth)
        assert r.status_code == 202 and r.json()["documents"][0]["status"] == "skipped", r.text
        r = post_multipart(
            client, f"/api/v1/kbs/{kb_id}/documents", auth, multipart(("files", b"f.md", b"# 3\n"))
        )
        assert r.status_code == 202, r.text
        assert _doc_count(client) == 3
        blobs_before = files_in(app_dir / "blobs")
        more = {"documents": [{"text": "four"}, {"text": "five"}]}
        err = error_of(
            client.post(f"/api/v1/kbs/{kb_id}/documents", json=more, headers=auth), 413, "workspace_quota"
        )
        assert err["message"].startswith("workspace quota: 5 of 3 documents"), err
        assert err["details"] == {"quota": "documents", "limit": 3, "held": 3, "adding": 2}
        assert _doc_count(client) == 3 and files_in(app_dir / "blobs") == blobs_before
        # another workspace has its own quota
        other = new_key(client, "other")
        r = client.post(f"/api/v1/kb-drafts/{draft(client, other)}/sources", json=text, headers=other)
        assert r.status_code == 201, r.text


def test_workspace_byte_quota(app_dir: Path) -> None:
    limits = LimitSettings(workspace_max_documents=0, workspace_max_bytes=1000)
    with client_for(app_dir, limits=limits) as client:
        auth = new_key(client)
        a = draft(client, auth)
        r = post_multipart(
            client, f"/api/v1/kb-drafts/{a}/sources", auth, multipart(("files", b"a.txt", b"a" * 600))
        )
        assert r.status_code == 201, r.text
        kb_id = client.post(f"/api/v1/kb-drafts/{a}/finalize", headers=auth).json()["kb_id"]
        body = multipart(("files", b"b.txt", b"b" * 600))
        err = error_of(
            post_multipart(client, f"/api/v1/kbs/{kb_id}/documents", auth, body), 413, "workspace_quota"
        )
        assert err["message"].startswith("workspace quota: 1200 of 1000 bytes"), err
        assert _doc_count(client) == 1
        records = {"documents": [{"text": "c" * 400}]}
        assert client.post(f"/api/v1/kbs/{kb_id}/documents", json=records, headers=auth).status_code == 202
        err = error_of(
            client.post(f"/api/v1/kbs/{kb_id}/documents", json={"documents": [{"text": "d"}]}, headers=auth),
            413,
            "workspace_quota",
        )
        assert "1001 of 1000 bytes" in err["message"]


# -- a real server: a 2 GB upload refused at the cap without being buffered ---------------------

GIB2 = 2 * 1024**3
CAP = 8 * 1024 * 1024


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[int, str, int]]:
    """``lorebase serve --workers 0`` with an 8 MiB cap: (port, api key, pid)."""
    with serve_process(tmp_path, workers=0, LOREBASE_MAX_UPLOAD_BYTES=str(CAP)) as served:
        yield served.port, served.key, served.proc.pid


def _draft_url(port: int, key: str) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/kb-drafts",
        json={"name": "big"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201, r.text
    return f"/api/v1/kb-drafts/{r.json()['id']}/sources"


def _read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _request_head(path: str, key: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{extra}\r\n"
    ).encode()


def test_a_2gb_upload_is_refused_at_the_cap_without_being_buffered(serve: tuple[int, str, int]) -> None:
    port, key, pid = serve
    path = _draft_url(port, key)
    rss_before, hwm_before = _vm(pid, "VmRSS"), _vm(pid, "VmHWM")
    part_head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="zeros.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = b"\0" * (1024 * 1024)
    sent = 0  # body bytes the server took from us
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_request_head(path, key, "Transfer-Encoding: chunked\r\n"))
        sock.settimeout(10)
        first = b"%x\r\n" % len(part_head) + part_head + b"\r\n"
        sock.sendall(first)
        sent += len(part_head)
        answered = False
        while sent < GIB2 and not answered:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answered = True
                break
            frame = memoryview(b"%x\r\n" % len(block) + block + b"\r\n")
            try:
                while frame:
                    n = sock.send(frame)
                    frame = frame[n:]
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break  # the server stopped reading: it has answered (or closed)
            sent += len(block)
        status, headers, body = _read_response(sock)
    hwm_after, rss_after = _vm(pid, "VmHWM"), _vm(pid, "VmRSS")
    assert status == 413, body
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and "'zeros.bin'" in error["message"], error
    assert str(CAP) in error["message"]
    assert headers.get("connection") == "close"
    assert sent < 64 * 1024 * 1024, f"the client had to send {sent} bytes"
    growth = hwm_after - hwm_before
    assert growth < 200 * 1024 * 1024, f"peak RSS grew by {growth} bytes"
    print(  # figures for the report (pytest -s)
        f"\n2 GB streamed upload: {sent} body bytes sent before the 413; server VmHWM {hwm_before} → "
        f"{hwm_after} (+{growth}), VmRSS {rss_before} → {rss_after}"
    )
    # nothing kept: the draft has no sources, the spool is empty
    r = httpx.get(
        f"http://127.0.0.1:{port}{path.rsplit('/', 1)[0]}", headers={"Authorization": f"Bearer {key}"}
    )
    assert r.json()["sources"] == []


def test_a_declared_2gb_body_is_refused_before_any_byte_is_sent(serve: tuple[int, str, int]) -> None:
    port, key, pid = serve
    path = _draft_url(port, key)
    hwm_before = _vm(pid, "VmHWM")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.monotonic()
        sock.sendall(_request_head(path, key, f"Content-Length: {GIB2}\r\n"))  # headers only
        status, headers, body = _read_response(sock, timeout=10)
        elapsed = time.monotonic() - start
    assert status == 413, body
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and str(GIB2) in error["message"], error
    assert headers.get("connection") == "close"
    assert elapsed < 5
    assert _vm(pid, "VmHWM") - hwm_before < 50 * 1024 * 1024
    # the same with an Idempotency-Key (whose fingerprint reads the body): refused before reading
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            _request_head(path, key, f"Content-Length: {GIB2}\r\nIdempotency-Key: {uuid.uuid4()}\r\n")
        )
        status, _, body = _read_response(sock, timeout=10)
    assert status == 413, body
