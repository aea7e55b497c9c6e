"""``lorebase.client`` against a real ``lorebase serve``: typed errors with the API's codes, a
lost answer retried under its Idempotency-Key (one effect), an event stream cut mid-body and
resumed with Last-Event-ID (every event once, to ``end``), uploads streamed from disk, and the
workspace wall."""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid
from pathlib import Path

import pytest

from lorebase import errors as server_errors
from lorebase.client import (
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    Forbidden,
    LorebaseError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    ValidationFailed,
)
from support.flaky_proxy import flaky_proxy

from .conftest import SEARCHES_PER_MINUTE, UPLOAD_CAP, Remote

pytestmark = pytest.mark.timeout(300)


def _raises(cls: type[LorebaseError], code: str, http: int | None, fn, *args, **kw) -> LorebaseError:  # type: ignore[no-untyped-def]
    with pytest.raises(cls) as caught:
        fn(*args, **kw)
    exc = caught.value
    assert exc.code == code and exc.status == http, (exc.code, exc.status, exc.message)
    assert isinstance(exc, server_errors.LorebaseError) and exc.message
    return exc


def test_every_error_answer_is_a_typed_exception_with_the_api_code(remote: Remote, tmp_path: Path) -> None:
    with remote.client() as lb:
        _raises(NotFound, "not_found", 404, lb.get_kb, str(uuid.uuid4()))
        kb = lb.get_kb(remote.kb_id)
        _raises(Conflict, "conflict", 409, lb.control_pipeline, kb.latest_pipeline_id, "retry")
        bad = _raises(ValidationFailed, "invalid_input", 422, lb.list_documents, remote.kb_id, status="bogus")
        assert "bogus" in bad.message
        empty = lb.create_draft("nothing in it")
        invalid = _raises(ValidationFailed, "draft_invalid", 422, lb.finalize, empty.id)
        assert invalid.details, "the draft's errors come as details"
        big = tmp_path / "big.pdf"
        big.write_bytes(b"%PDF-1.7\n" + b"0" * (UPLOAD_CAP + 10_000))
        too_big = _raises(PayloadTooLarge, "payload_too_large", 413, lb.upload_files, empty.id, [big])
        assert too_big.details["limit_bytes"] == UPLOAD_CAP
        lb.delete_draft(empty.id)
    with Client(remote.url, "lb_not-a-real-key") as stranger:
        _raises(Unauthorized, "unauthorized", 401, stranger.list_kbs)
    with Client(remote.url, remote.key_in("default", scopes="read")) as reader:
        _raises(Forbidden, "forbidden", 403, reader.create_draft, "not allowed")
    # a key of its own, so that the limit is not shared with the other tests' searches
    with Client(remote.url, remote.key_in("default", scopes="read"), retry=RetryPolicy(attempts=1)) as eager:
        with pytest.raises(RateLimited) as limited:
            for _ in range(SEARCHES_PER_MINUTE + 1):
                eager.search(remote.kb_id, "bees", mode="keyword", top_k=1)
        assert limited.value.code == "rate_limited" and limited.value.retry_after
    with Client("http://127.0.0.1:9", "k", retry=RetryPolicy(attempts=2, backoff=0.01)) as nowhere:
        _raises(ConnectionFailed, "connection_failed", None, nowhere.list_kbs)


def test_client_side_checks_use_the_api_models(remote: Remote) -> None:
    with remote.client() as lb:
        refused = _raises(ValidationFailed, "invalid_input", 422, lb.search, remote.kb_id, "x", top_k=1000)
        assert refused.details[0]["field"] == "top_k"
        # an id is one path segment, never a way to another endpoint
        _raises(NotFound, "not_found", 404, lb.get_kb, "../keys")


def test_a_finalize_whose_answer_is_lost_is_retried_with_its_key_and_runs_once(remote: Remote) -> None:
    with flaky_proxy(remote.url) as proxy, Client(proxy.url, remote.key) as lb:
        draft = lb.create_draft("lost-answer")
        lb.add_text_source(draft.id, [{"external_id": "one", "text": "Penguins huddle to keep warm."}])
        proxy.fault("POST", f"/api/v1/kb-drafts/{draft.id}/finalize", drop_answer=True)
        done = lb.finalize(draft.id)
        first, retry = proxy.seen("POST", f"/api/v1/kb-drafts/{draft.id}/finalize")
        assert first.faulted and first.status == 202  # the server finalized; the answer was lost
        key = first.headers["idempotency-key"]
        assert key and retry.headers["idempotency-key"] == key
        assert retry.response_headers.get("idempotent-replayed") == "true"
        assert retry.response_body == first.response_body  # the first answer, replayed
        assert [kb.id for kb in lb.iter_kbs() if kb.name == "lost-answer"] == [done.kb_id]
        assert lb.wait(done.pipeline_id).status == "completed"
        lb.delete_kb(done.kb_id)


def test_an_event_stream_cut_twice_resumes_after_the_last_event_and_sees_each_once(remote: Remote) -> None:
    records = [
        {"external_id": f"stream-{i}", "text": f"Octopus fact number {i}: they have three hearts."}
        for i in range(3)
    ]
    with flaky_proxy(remote.url) as proxy, Client(proxy.url, remote.key) as lb:
        proxy.fault("GET", "/api/v1/pipelines/", cut_after_events=2, times=2)
        added = lb.add_documents(remote.kb_id, records)
        followed = list(lb.events(added.pipeline_id))
        streams = proxy.seen("GET", f"/api/v1/pipelines/{added.pipeline_id}/events")
    with remote.client() as lb:
        everything = list(lb.events(added.pipeline_id))  # the whole log, read again in one go
    ids = [e.id for e in followed]
    assert ids == [e.id for e in everything] and ids == sorted(set(ids))
    assert followed[-1].event == "end" and followed[-1].data["status"] == "completed"
    assert len(streams) >= 3 and streams[0].faulted and streams[1].faulted
    assert "last-event-id" not in streams[0].headers
    assert streams[1].headers["last-event-id"] == str(ids[1])  # resumed after the 2nd event
    assert streams[2].headers["last-event-id"] == str(ids[3])


def test_the_async_client_resumes_a_cut_stream_and_searches(remote: Remote) -> None:
    async def run(url: str) -> tuple[list[int], list[str]]:
        async with AsyncClient(url, remote.key) as lb:
            kb = await lb.find_kb(remote.kb_name)
            added = await lb.add_documents(
                kb.id, [{"external_id": "async", "text": "Axolotls regrow limbs."}]
            )
            seen = [e.id async for e in lb.events(added.pipeline_id)]
            found = await lb.search(kb.id, "which animal regrows its limbs", top_k=2)
            return seen, [r.external_id or "" for r in found.results]

    with flaky_proxy(remote.url) as proxy:
        proxy.fault("GET", "/api/v1/pipelines/", cut_after_events=1)
        seen, top = asyncio.run(run(proxy.url))
    assert seen == sorted(set(seen)) and len(seen) >= 3
    assert top[0] == "async"


def test_uploads_are_streamed_from_disk(remote: Remote, tmp_path: Path) -> None:
    size = UPLOAD_CAP - 100_000
    upload = tmp_path / "scan.pdf"
    with upload.open("wb") as f:
        f.write(b"%PDF-1.7\n")
        for _ in range(size // 100_000):
            f.write(b"0" * 100_000)
    with remote.client() as lb:
        draft = lb.create_draft("uploads")
        tracemalloc.start()
        try:
            sources = lb.upload_files(draft.id, [upload])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        lb.delete_draft(draft.id)
    assert [(s.type, s.filename, s.size_bytes) for s in sources] == [
        ("file", "scan.pdf", upload.stat().st_size)
    ]
    assert peak < upload.stat().st_size / 4, f"{peak} bytes held for a {upload.stat().st_size} byte file"


def test_another_workspace_sees_none_of_it(remote: Remote) -> None:
    with remote.client() as owner:
        pipeline_id = owner.get_kb(remote.kb_id).latest_pipeline_id
        document_id = owner.list_documents(remote.kb_id, limit=1).items[0].id
    with Client(remote.url, remote.key_in("elsewhere")) as other:
        assert other.list_kbs().items == []
        for call, arg in (
            (other.get_kb, remote.kb_id),
            (other.get_pipeline, pipeline_id),
            (other.get_document, document_id),
            (other.find_kb, remote.kb_name),
        ):
            _raises(NotFound, "not_found", 404, call, arg)
        _raises(NotFound, "not_found", 404, other.search, remote.kb_id, "bees")
        _raises(NotFound, "not_found", 404, other.delete_kb, remote.kb_id)
    with remote.client() as owner:
        assert owner.get_kb(remote.kb_id).status == "ready"
