"""The blob GC (``services/lifecycle.py``): what no one references is freed once its grace period
has passed, what someone references never is, even while uploads and finalizes race the GC.

Bytes are measured where they live: the files under ``data_dir/blobs`` (local store) or the rows
of ``blobs`` (database store, the default on PostgreSQL). The scheduler is off in these apps so
that only the GC passes the tests run are at work; real time passes for the grace period.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from lorebase.adapters.blobs.database import DatabaseBlobStore
from lorebase.adapters.blobs.local import LocalBlobStore
from lorebase.db.models import Blob, Document, utcnow
from lorebase.runtime import Runtime
from lorebase.services import drafts
from lorebase.services.lifecycle import collect_garbage, referenced_blob_keys
from lorebase.settings import Settings

_KEY = re.compile(r"^[0-9a-f]{64}$")
GRACE = 1.0


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(
        tmp_path / "data",
        retention={"blob_grace_seconds": GRACE},
        scheduler={"enabled": False},
        **overrides,
    )


def stored(runtime: Runtime) -> tuple[int, int]:
    """(blobs, bytes) as stored, read from the disk or the table, not through the store."""
    if isinstance(runtime.blobs, DatabaseBlobStore):
        with runtime.db.read_session() as s:
            n, size = s.execute(select(func.count(), func.coalesce(func.sum(Blob.size), 0))).one()
        return int(n), int(size)
    files = [p for p in runtime.settings.blob_dir.glob("*/*") if _KEY.match(p.name)]
    return len(files), sum(p.stat().st_size for p in files)


def _runtime(client: TestClient) -> Runtime:
    return client.app.state.runtime  # type: ignore[attr-defined]


def _doc_keys(runtime: Runtime) -> set[str]:
    with runtime.db.read_session() as s:
        return {k for k in s.execute(select(Document.blob_key)).scalars() if k is not None}


def _text(tag: str, words: int = 300) -> str:
    return " ".join(f"{tag}-{i}" for i in range(words))


@pytest.mark.parametrize("kind", ["local", "database"])
def test_a_re_put_refreshes_stored_at_and_the_conditional_delete_loses_to_it(
    runtime: Runtime, kind: str
) -> None:
    store = (
        LocalBlobStore(runtime.settings.blob_dir / kind) if kind == "local" else DatabaseBlobStore(runtime.db)
    )
    key = store.put(b"some bytes")
    [(listed, first, size)] = [b for b in store.iter_blobs() if b[0] == key]
    assert (listed, size) == (key, 10)
    time.sleep(0.05)
    assert store.put(b"some bytes") == key
    [(_, again, _)] = [b for b in store.iter_blobs() if b[0] == key]
    assert again > first
    assert not store.delete_unless_stored_since(key, again)  # stored at `again`: kept
    assert store.get(key) == b"some bytes"
    time.sleep(0.05)
    assert store.delete_unless_stored_since(key, utcnow())
    assert key not in {b[0] for b in store.iter_blobs()}
    assert store.put(b"some bytes") == key and store.get(key) == b"some bytes"


def test_a_referenced_blob_is_never_deleted_even_with_grace_0(tmp_path: Path) -> None:
    with running_app(_settings(tmp_path)) as client:
        h, runtime = key_headers(client), _runtime(client)
        fin = finalize_draft(
            client,
            h,
            files=[("files", ("notes.md", f"# Notes\n\n{_text('kb')}\n".encode(), "text/markdown"))],
            records=[{"external_id": "r", "text": _text("record")}],
        )
        assert wait_pipeline(client, h, fin["pipeline_id"])["status"] == "completed"
        draft = client.post("/api/v1/kb-drafts", json={"name": "pending"}, headers=h).json()["id"]
        r = client.post(
            f"/api/v1/kb-drafts/{draft}/sources",
            files=[("files", ("draft.md", f"# Draft\n\n{_text('draft')}\n".encode(), "text/markdown"))],
            headers=h,
        )
        assert r.status_code == 201, r.text
        orphan = runtime.blobs.put(b"nobody needs these bytes")
        needed = referenced_blob_keys(runtime)
        assert len(needed) == 3 and needed >= _doc_keys(runtime)

        report = collect_garbage(runtime, grace_seconds=0)

        assert report.deleted == 1 and report.bytes_freed == len(b"nobody needs these bytes")
        assert stored(runtime)[0] == 3
        for key in needed:
            runtime.blobs.get(key)  # raises NotFound if the GC took it
        with pytest.raises(Exception, match="not found"):
            runtime.blobs.get(orphan)
        r = client.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=h)  # the draft's upload is intact
        assert wait_pipeline(client, h, r.json()["pipeline_id"])["status"] == "completed"


def test_deleting_a_kb_and_replacing_an_upload_free_their_bytes_after_the_grace_period(
    tmp_path: Path,
) -> None:
    with running_app(_settings(tmp_path)) as client:
        h, runtime = key_headers(client), _runtime(client)
        keep = finalize_draft(
            client, h, records=[{"external_id": "keep", "text": _text("keep")}], name="keep"
        )
        gone = finalize_draft(
            client, h, records=[{"external_id": "gone", "text": _text("gone", 3000)}], name="gone"
        )
        for fin in (keep, gone):
            assert wait_pipeline(client, h, fin["pipeline_id"])["status"] == "completed"
        before = stored(runtime)
        assert before[0] == 2

        # a young orphan waits out its grace period
        young = runtime.blobs.put(b"just stored, not yet referenced")
        assert collect_garbage(runtime).deleted == 0
        runtime.blobs.get(young)

        assert client.delete(f"/api/v1/kbs/{gone['kb_id']}", headers=h).status_code == 204
        # replace the kept document's text: its old bytes lose their last reference
        r = client.post(
            f"/api/v1/kbs/{keep['kb_id']}/documents",
            json={"documents": [{"external_id": "keep", "text": _text("replaced")}]},
            headers=h,
        )
        assert r.status_code == 202, r.text
        assert wait_pipeline(client, h, r.json()["pipeline_id"])["status"] == "completed"
        assert stored(runtime)[0] == 4  # nothing freed yet: the GC has not run
        time.sleep(GRACE + 0.1)

        report = collect_garbage(runtime)

        count, size = stored(runtime)
        assert report.deleted == 3 and count == 1
        assert size == len(_text("replaced").encode()) and before[1] - size > 20_000
        assert report.bytes_freed == before[1] + len(b"just stored, not yet referenced")
        assert _doc_keys(runtime) == {k for k, _, _ in runtime.blobs.iter_blobs()}
        hits = client.post(f"/api/v1/kbs/{keep['kb_id']}/search", json={"query": "replaced-7"}, headers=h)
        assert hits.status_code == 200 and hits.json()["results"]


def test_an_expired_drafts_upload_is_freed_after_the_purge(tmp_path: Path) -> None:
    ttl = 1.5
    with running_app(_settings(tmp_path, draft_ttl_hours=ttl / 3600)) as client:
        h, runtime = key_headers(client), _runtime(client)
        draft = client.post("/api/v1/kb-drafts", json={"name": "short-lived"}, headers=h).json()["id"]
        data = f"# Draft\n\n{_text('expiring', 2000)}\n".encode()
        r = client.post(
            f"/api/v1/kb-drafts/{draft}/sources",
            files=[("files", ("x.md", data, "text/markdown"))],
            headers=h,
        )
        assert r.status_code == 201, r.text
        time.sleep(GRACE + 0.1)
        assert collect_garbage(runtime).deleted == 0  # old enough, but the live draft needs it
        assert stored(runtime) == (1, len(data))
        time.sleep(ttl - GRACE)
        drafts.purge_expired(runtime)

        assert collect_garbage(runtime).bytes_freed == len(data)
        assert stored(runtime) == (0, 0)


def backdate(runtime: Runtime, key: str, seconds: float) -> None:
    """Move a stored blob's stored_at ``seconds`` into the past (data, as the disk or the table
    holds it: the mtime of its file, or ``blobs.created_at``)."""
    then = utcnow() - timedelta(seconds=seconds)
    if isinstance(runtime.blobs, DatabaseBlobStore):
        with runtime.db.session() as s:
            s.execute(update(Blob).where(Blob.key == key).values(created_at=then))
    else:
        os.utime(runtime.settings.blob_dir / key[:2] / key, (then.timestamp(), then.timestamp()))


def test_uploads_and_finalizes_racing_the_gc_lose_nothing(tmp_path: Path) -> None:
    """Each upload stores bytes the GC already sees as an old orphan (planted just before, its
    stored_at moved past the grace period): only the upload's re-put refreshing stored_at, and the
    GC's delete losing to it, keep the bytes the new draft source or document names."""
    n = 40
    texts = [_text(f"race{i}", 20) for i in range(n)]
    with running_app(_settings(tmp_path)) as client:
        h, runtime = key_headers(client), _runtime(client)
        finished: dict[str, Any] = {}

        def plant(text: str) -> None:
            backdate(runtime, runtime.blobs.put(text.encode()), 2 * GRACE)

        def client_side() -> None:
            try:
                draft = client.post("/api/v1/kb-drafts", json={"name": "race"}, headers=h).json()["id"]
                for i, text in enumerate(texts):
                    plant(text)
                    body = {"type": "text", "documents": [{"external_id": f"d{i}", "text": text}]}
                    r = client.post(f"/api/v1/kb-drafts/{draft}/sources", json=body, headers=h)
                    assert r.status_code == 201, r.text
                finished["fin"] = client.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=h).json()
            except BaseException as exc:  # surfaced below
                finished["error"] = exc

        thread = threading.Thread(target=client_side)
        thread.start()
        passes = 0
        while thread.is_alive():
            collect_garbage(runtime, grace_seconds=GRACE if passes % 2 else GRACE / 2)
            passes += 1
        thread.join()
        assert "error" not in finished, finished.get("error")
        assert passes > 5
        fin = finished["fin"]
        ended = wait_pipeline(client, h, fin["pipeline_id"])
        docs = client.get(f"/api/v1/kbs/{fin['kb_id']}/documents?limit=100", headers=h).json()["items"]
        assert [d["error"] for d in docs if d["status"] != "indexed"] == []
        assert len(docs) == n and ended["status"] == "completed"
        for key in _doc_keys(runtime):
            runtime.blobs.get(key)
