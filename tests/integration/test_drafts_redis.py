"""Scaled mode (``redis_url`` set): drafts live in Redis with a TTL, never in SQL; pipeline events
go over Redis pub/sub, so another node's runtime sees a worker's status changes.

Runs against a real Redis (database 15 of ``LOREBASE_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/15``); every test uses its own key prefix and deletes its keys after.
Skipped when Redis is not reachable, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from conftest import key_headers, make_settings
from lorebase.adapters.drafts.protocol import DraftRecord
from lorebase.adapters.drafts.redis import TOMBSTONE_MS, RedisDraftRepository
from lorebase.adapters.events.redis import RedisEventBus
from lorebase.app import create_app
from lorebase.assembly import build_executor
from lorebase.db.models import KnowledgeBase, Pipeline
from lorebase.errors import NotFound
from lorebase.runtime import Runtime
from lorebase.services import drafts, pipelines
from lorebase.services.auth import local_principal
from lorebase.services.events import pipeline_channel, publish_pipeline
from lorebase.settings import Settings

REDIS_URL = os.environ.get("LOREBASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RECORD = {"external_id": "mantis", "title": "Mantis shrimp", "text": "A mantis shrimp punches at 23 m/s."}
DAY_MS = 24 * 3600 * 1000


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is not reachable at {REDIS_URL} ({exc}); start one or set LOREBASE_TEST_REDIS_URL"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    name = f"lbtest-{uuid.uuid4().hex[:16]}"
    yield name
    keys = list(redis_client.scan_iter(match=f"{name}:*", count=500))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def settings(tmp_path: Path, prefix: str) -> Settings:
    """Overrides conftest's: the scaled mode's Redis, parsing in the worker thread (frugal)."""
    return make_settings(
        tmp_path / "data", redis_url=REDIS_URL, queue_prefix=prefix, jobs={"parse_processes": 0}
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, workers=1)) as client:
        yield client


@pytest.fixture
def sql_draft_statements(api: TestClient) -> Iterator[list[str]]:
    """Every SQL statement naming the ``drafts`` table while the test runs (there must be none)."""
    engine = api.app.state.runtime.db.engine  # type: ignore[attr-defined]
    seen: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if re.search(r"\bdrafts\b", statement, re.IGNORECASE):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    yield seen
    event.remove(engine, "before_cursor_execute", spy)


def _rt(api: TestClient) -> Runtime:
    return api.app.state.runtime  # type: ignore[attr-defined,no-any-return]


def _draft(api: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/kb-drafts", json={"name": "draft", **body}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def _add_text(api: TestClient, auth: dict[str, str], draft_id: str, record: dict[str, Any] = RECORD) -> Any:
    r = api.post(
        f"/api/v1/kb-drafts/{draft_id}/sources", json={"type": "text", "documents": [record]}, headers=auth
    )
    assert r.status_code == 201, r.text
    return r.json()["sources"]


def _kb_count(api: TestClient) -> int:
    with _rt(api).db.read_session() as s:
        return s.execute(select(func.count()).select_from(KnowledgeBase)).scalar_one()


def _in_parallel(n: int, call: Callable[[int], Any]) -> list[Any]:
    """Run ``call(i)`` in ``n`` threads released together by a barrier; results in order of i."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# -- drafts ---------------------------------------------------------------------------------------


def test_draft_crud_and_finalize_run_on_redis_and_never_touch_the_sql_drafts_table(
    api: TestClient,
    auth: dict[str, str],
    redis_client: redis.Redis,
    prefix: str,
    sql_draft_statements: list[str],
) -> None:
    assert isinstance(_rt(api).drafts, RedisDraftRepository)
    draft = _draft(api, auth, description="notes")
    key = f"{prefix}:draft:{draft['id']}"
    assert redis_client.exists(key)
    got = api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()
    assert got == draft
    r = api.patch(f"/api/v1/kb-drafts/{draft['id']}", json={"name": "octopus"}, headers=auth)
    assert r.status_code == 200 and r.json()["name"] == "octopus"
    (first,) = _add_text(api, auth, draft["id"])
    _add_text(api, auth, draft["id"], {"text": "Octopuses have three hearts."})
    r = api.delete(f"/api/v1/kb-drafts/{draft['id']}/sources/{first['id']}", headers=auth)
    assert r.status_code == 204
    assert len(api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["sources"]) == 1
    assert api.post(f"/api/v1/kb-drafts/{draft['id']}/validate", headers=auth).json()["is_valid"]
    r = api.post(f"/api/v1/kb-drafts/{draft['id']}/finalize", headers=auth)
    assert r.status_code == 202, r.text
    assert not redis_client.exists(key)
    kb = api.get(f"/api/v1/kbs/{r.json()['kb_id']}", headers=auth).json()
    assert kb["name"] == "octopus" and kb["description"] == "notes"
    assert api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).status_code == 404

    other = _draft(api, auth)
    assert api.delete(f"/api/v1/kb-drafts/{other['id']}", headers=auth).status_code == 204
    assert not redis_client.exists(f"{prefix}:draft:{other['id']}")
    assert api.get(f"/api/v1/kb-drafts/{other['id']}", headers=auth).status_code == 404
    assert drafts.purge_expired(_rt(api)) == 0  # the TTL expires drafts; the sweep has nothing to do
    assert sql_draft_statements == []


def test_the_ttl_is_set_and_every_change_renews_it(
    api: TestClient, auth: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    draft = _draft(api, auth)
    key = f"{prefix}:draft:{draft['id']}"
    assert DAY_MS - 60_000 < redis_client.pttl(key) <= DAY_MS
    redis_client.pexpire(key, 60_000)
    _add_text(api, auth, draft["id"])
    assert redis_client.pttl(key) > DAY_MS - 60_000
    redis_client.pexpire(key, 60_000)
    r = api.patch(f"/api/v1/kb-drafts/{draft['id']}", json={"description": "touched"}, headers=auth)
    assert r.status_code == 200
    assert redis_client.pttl(key) > DAY_MS - 60_000
    assert r.json()["expires_at"] > draft["expires_at"]


def test_an_expired_draft_is_404_everywhere(
    api: TestClient, auth: dict[str, str], redis_client: redis.Redis, prefix: str
) -> None:
    draft = _draft(api, auth)
    _add_text(api, auth, draft["id"])
    redis_client.pexpire(f"{prefix}:draft:{draft['id']}", 1)
    time.sleep(0.01)
    base = f"/api/v1/kb-drafts/{draft['id']}"
    assert api.get(base, headers=auth).status_code == 404
    assert api.patch(base, json={"name": "x"}, headers=auth).status_code == 404
    assert (
        api.post(f"{base}/sources", json={"type": "text", "documents": [RECORD]}, headers=auth).status_code
        == 404
    )
    assert api.post(f"{base}/validate", headers=auth).status_code == 404
    assert api.post(f"{base}/finalize", headers=auth).status_code == 404
    assert _kb_count(api) == 0


def test_a_tiny_ttl_setting_expires_drafts_by_itself(tmp_path: Path, prefix: str) -> None:
    rt = Runtime(
        make_settings(tmp_path / "tiny", redis_url=REDIS_URL, queue_prefix=prefix, draft_ttl_hours=0.2 / 3600)
    )
    try:
        p = local_principal(rt.db)
        draft = drafts.create(rt, p, name="brief", description=None, config=None)
        assert drafts.get(rt, p, draft["id"])["name"] == "brief"
        time.sleep(0.3)
        with pytest.raises(NotFound):
            drafts.get(rt, p, draft["id"])
    finally:
        rt.close()


def test_another_workspaces_draft_is_404_and_left_untouched(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    _add_text(api, auth, draft["id"])
    other = key_headers(api, "other")
    base = f"/api/v1/kb-drafts/{draft['id']}"
    assert api.get(base, headers=other).status_code == 404
    assert api.patch(base, json={"name": "mine"}, headers=other).status_code == 404
    assert (
        api.post(f"{base}/sources", json={"type": "text", "documents": [RECORD]}, headers=other).status_code
        == 404
    )
    assert api.post(f"{base}/finalize", headers=other).status_code == 404
    assert api.delete(base, headers=other).status_code == 404
    mine = api.get(base, headers=auth).json()
    assert mine["name"] == "draft" and len(mine["sources"]) == 1
    assert _kb_count(api) == 0


def test_concurrent_source_additions_all_land(api: TestClient, auth: dict[str, str]) -> None:
    draft = _draft(api, auth)
    n = 6

    def add(i: int) -> int:
        body = {"type": "text", "documents": [{"external_id": f"doc-{i}", "text": f"record number {i}"}]}
        return api.post(f"/api/v1/kb-drafts/{draft['id']}/sources", json=body, headers=auth).status_code

    assert _in_parallel(n, add) == [201] * n
    sources = api.get(f"/api/v1/kb-drafts/{draft['id']}", headers=auth).json()["sources"]
    assert sorted(s["documents"][0]["external_id"] for s in sources) == sorted(f"doc-{i}" for i in range(n))


def test_a_write_between_read_and_save_is_redone_not_lost(api: TestClient, prefix: str) -> None:
    """The lost-update race forced deterministically: another client changes the draft after this
    update read it; the optimistic transaction fails, re-reads and applies its change again."""
    rt = _rt(api)
    p = local_principal(rt.db)
    draft = drafts.create(rt, p, name="race", description=None, config=None)
    other_client = redis.Redis.from_url(REDIS_URL)
    other = RedisDraftRepository(other_client, prefix=prefix, ttl_seconds=3600)
    calls = 0

    def change(d: DraftRecord) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # between our read and our save, someone else adds a source
            other.update(
                p.workspace_id, draft["id"], lambda o: o.sources.append({"id": "theirs", "type": "web"})
            )
        d.sources.append({"id": "ours", "type": "web"})

    try:
        rt.drafts.update(p.workspace_id, draft["id"], change)
    finally:
        other_client.close()
    assert calls == 2
    assert [s["id"] for s in rt.drafts.get(p.workspace_id, draft["id"]).sources] == ["theirs", "ours"]


def test_two_concurrent_finalizes_make_exactly_one_kb(
    api: TestClient, auth: dict[str, str], sql_draft_statements: list[str]
) -> None:
    draft = _draft(api, auth)
    _add_text(api, auth, draft["id"])
    responses = _in_parallel(
        2, lambda _i: api.post(f"/api/v1/kb-drafts/{draft['id']}/finalize", headers=auth)
    )
    assert sorted(r.status_code for r in responses) == [202, 404], [r.text for r in responses]
    loser = next(r for r in responses if r.status_code == 404)
    assert loser.json()["error"]["code"] == "not_found"
    assert _kb_count(api) == 1
    assert sql_draft_statements == []


def test_only_one_take_wins_the_draft(api: TestClient) -> None:
    rt = _rt(api)
    p = local_principal(rt.db)
    draft = drafts.create(rt, p, name="once", description=None, config=None)
    with rt.db.session() as s:
        assert rt.drafts.take(p.workspace_id, draft["id"], s).name == "once"
        with pytest.raises(NotFound):
            rt.drafts.take(p.workspace_id, draft["id"], s)


def test_a_finalize_that_fails_puts_the_draft_back(
    api: TestClient, redis_client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = _rt(api)
    p = local_principal(rt.db)
    draft = drafts.create(rt, p, name="retry me", description=None, config=None)
    drafts.add_text(rt, p, draft["id"], [RECORD])
    key = f"{prefix}:draft:{draft['id']}"

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr(drafts, "start_pipeline", boom)
    with pytest.raises(RuntimeError, match="went away"):
        drafts.finalize(rt, p, draft["id"])
    assert redis_client.pttl(key) > DAY_MS - 60_000
    assert len(drafts.get(rt, p, draft["id"])["sources"]) == 1
    assert _kb_count(api) == 0
    monkeypatch.undo()
    assert drafts.finalize(rt, p, draft["id"])["status"] == "processing"
    assert not redis_client.exists(key)


def test_blob_keys_name_live_drafts_uploads_and_a_just_taken_drafts(
    api: TestClient, redis_client: redis.Redis, prefix: str
) -> None:
    """What the blob GC keeps: a finalize commits the documents that take over a draft's uploads
    after its take, so the taken draft's keys stay named for a while (a tombstone)."""
    rt = _rt(api)
    p = local_principal(rt.db)
    draft = drafts.create(rt, p, name="uploads", description=None, config=None)
    other = drafts.create(rt, p, name="web only", description=None, config=None)
    drafts.add_text(rt, p, draft["id"], [RECORD])
    key = hashlib.sha256(RECORD["text"].encode()).hexdigest()
    assert rt.drafts.blob_keys() == {key}
    with rt.db.session() as s:
        rt.drafts.take(p.workspace_id, draft["id"], s)
        rt.drafts.take(p.workspace_id, other["id"], s)
    assert not redis_client.exists(f"{prefix}:draft:{draft['id']}")
    assert rt.drafts.blob_keys() == {key}
    assert 0 < redis_client.pttl(f"{prefix}:draft-taken:{draft['id']}") <= TOMBSTONE_MS


# -- events ---------------------------------------------------------------------------------------


def test_another_nodes_runtime_receives_a_workers_pipeline_events(tmp_path: Path, prefix: str) -> None:
    """Two runtimes sharing only Redis: the "API node" subscribes, the "worker node" runs the
    pipeline; the subscriber sees the pipeline settle as ``completed``."""
    node_settings = {"redis_url": REDIS_URL, "queue_prefix": prefix, "jobs": {"parse_processes": 0}}
    worker = Runtime(make_settings(tmp_path / "worker", **node_settings))
    api_node = Runtime(make_settings(tmp_path / "api", **node_settings))
    try:
        p = local_principal(worker.db)
        draft = drafts.create(worker, p, name="events", description=None, config=None)
        drafts.add_text(worker, p, draft["id"], [RECORD])
        pipeline_id = drafts.finalize(worker, p, draft["id"])["pipeline_id"]
        with api_node.events.subscribe(pipeline_channel(pipeline_id), idle_timeout=5) as sub:
            pipelines.pause(worker, p, pipeline_id)
            pipelines.resume(worker, p, pipeline_id)
            build_executor(worker, concurrency=1).run_until_idle(timeout=120)
            events = []
            while (received := sub.get(timeout=10)) is not None:
                events.append(received)
                if received["status"] == "completed":
                    break
        statuses = [e["status"] for e in events]
        assert statuses[:2] == ["paused", "running"], events
        assert statuses[-1] == "completed", events
        done = events[-1]
        assert done["kind"] == "status" and done["pipeline_id"] == pipeline_id and done["progress"] == 100
        with worker.db.read_session() as s:
            assert s.get(Pipeline, pipeline_id).status == "completed"  # type: ignore[union-attr]
    finally:
        worker.close()
        api_node.close()


def test_a_redis_outage_never_fails_a_publish(caplog: pytest.LogCaptureFixture) -> None:
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)

    class FakeRuntime:
        events = RedisEventBus(dead, prefix="lbtest-dead")

    with caplog.at_level(logging.WARNING, logger="lorebase.events"):
        publish_pipeline(FakeRuntime(), "p1", "status", {"status": "completed"})  # type: ignore[arg-type]
    assert "could not publish status event of pipeline p1" in caplog.text
