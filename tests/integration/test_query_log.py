"""The query log is written off the request path (``db/querylog.py``): searches queue their rows, a
thread writes them in batches within ``query_log_delay_seconds``, a clean shutdown loses nothing,
and a client of the same process sees its own queries (feedback, listing) at once."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import func, select

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from lorebase.db.models import KnowledgeBase, QueryLog
from lorebase.db.querylog import QueryLogWriter
from lorebase.runtime import Runtime
from lorebase.services.auth import Principal
from support.waiting import wait_for


def _logged(runtime: Runtime) -> list[str]:
    with runtime.db.read_session() as s:
        return list(s.execute(select(QueryLog.query).order_by(QueryLog.created_at)).scalars())


def test_searches_are_logged_off_the_request_path_and_a_clean_shutdown_loses_none(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", query_log_delay_seconds=60.0)  # only a flush writes
    with running_app(settings, workers=1) as client:
        auth = key_headers(client)
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        records = [{"external_id": "t", "title": "Tides", "text": "The moon's pull raises the tides."}]
        done = finalize_draft(client, auth, records=records)
        kb_id = done["kb_id"]
        assert wait_pipeline(client, auth, done["pipeline_id"])["status"] == "completed"

        ids = []
        for i in range(5):
            r = client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": f"tides {i}"}, headers=auth)
            assert r.status_code == 200, r.text
            ids.append(r.json()["query_id"])
        assert _logged(runtime) == []  # queued: no search waited for a write

        # the same process's client sees its own queries at once
        r = client.post(f"/api/v1/queries/{ids[0]}/feedback", json={"feedback": "negative"}, headers=auth)
        assert r.status_code == 200, r.text
        listed = client.get(f"/api/v1/kbs/{kb_id}/queries", headers=auth).json()
        assert listed["total"] == 5 and {q["id"] for q in listed["items"]} == set(ids)
        assert [q["feedback"] for q in listed["items"] if q["id"] == ids[0]] == ["negative"]

        for i in range(5, 8):
            assert client.post(
                f"/api/v1/kbs/{kb_id}/search", json={"query": f"tides {i}"}, headers=auth
            ).is_success
        assert len(_logged(runtime)) == 5
    # the app stopped cleanly: the three queued queries were written, every query exactly once
    rt = Runtime(settings, migrate=False)
    try:
        assert _logged(rt) == [f"tides {i}" for i in range(8)]
    finally:
        rt.close()


def test_the_writer_writes_within_its_delay_and_drops_only_rows_of_a_deleted_kb(
    runtime: Runtime, principal: Principal
) -> None:
    ws = principal.workspace_id
    with runtime.db.session() as s:
        for kb_id in ("kb-kept", "kb-gone"):
            s.add(KnowledgeBase(id=kb_id, workspace_id=ws, name=kb_id, config={}, status="ready"))
    writer = QueryLogWriter(runtime.db, delay=0.2)
    row = {"workspace_id": ws, "mode": "hybrid", "top_k": 10, "filters": {}, "result_chunk_ids": []}
    first = writer.record(kb_id="kb-kept", query="first", latency_ms=1.0, **row)
    started = time.monotonic()
    wait_for(lambda: _logged(runtime) == ["first"], 5, "the writer's own pass")
    assert time.monotonic() - started < 2.0
    assert not writer.holds(first)

    writer.delay = 60.0  # from now on only close() writes
    writer.record(kb_id="kb-gone", query="of a deleted kb", latency_ms=1.0, **row)
    writer.record(kb_id="kb-kept", query="second", latency_ms=1.0, **row)
    with runtime.db.session() as s:
        s.delete(s.get(KnowledgeBase, "kb-gone"))
    writer.close()
    assert _logged(runtime) == ["first", "second"]  # one refused row did not take its batch along
    # after close, a search writes its row itself (the CLI's runtime is closing, nothing is lost)
    writer.record(kb_id="kb-kept", query="late", latency_ms=1.0, **row)
    assert _logged(runtime)[-1] == "late"
    with runtime.db.read_session() as s:
        assert s.execute(select(func.count()).select_from(QueryLog)).scalar_one() == 3
