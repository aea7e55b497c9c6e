"""Scheduled work: a pipeline that starts at ``not_before``, and web sources refreshed every
``refresh_every`` by the scheduler. Real app, real worker threads, a real site on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from conftest import key_headers, make_settings, wait_pipeline
from lorebase.app import create_app
from lorebase.db.models import Job, Pipeline, Source
from lorebase.runtime import Runtime
from lorebase.services import sources
from support.site import serve
from support.waiting import wait_for

RECORDS = [
    {"external_id": f"r{i}", "text": f"Record {i} is about alpacas grazing in valley {i}."} for i in range(3)
]


def _runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


def _draft(client: TestClient, h: dict[str, str], source: dict[str, Any]) -> str:
    draft_id = str(client.post("/api/v1/kb-drafts", json={"name": "farm"}, headers=h).json()["id"])
    r = client.post(f"/api/v1/kb-drafts/{draft_id}/sources", json=source, headers=h)
    assert r.status_code == 201, r.text
    return draft_id


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "data",
        crawl={"allow_private_networks": True},
        scheduler={"tick_seconds": 0.2, "refresh_seconds": 1.0},
    )
    with TestClient(create_app(settings, workers=2)) as c:
        yield c


def test_a_pipeline_with_not_before_waits_queued_until_then_and_then_completes(client: TestClient) -> None:
    h = key_headers(client)
    draft_id = _draft(client, h, {"type": "text", "documents": RECORDS})
    at = datetime.now(UTC) + timedelta(seconds=3)
    took = time.perf_counter()
    r = client.post(
        f"/api/v1/kb-drafts/{draft_id}/finalize", params={"not_before": at.isoformat()}, headers=h
    )
    took = time.perf_counter() - took
    assert r.status_code == 202, r.text
    assert took < 0.5, took  # finalize still answers at once
    pipeline_id = r.json()["pipeline_id"]
    state = client.get(f"/api/v1/pipelines/{pipeline_id}", headers=h).json()
    assert state["status"] == "queued" and state["started_at"] is None, state
    assert datetime.fromisoformat(state["not_before"]) == at  # the resource says when it starts
    assert "starts at" in state["message"]
    rt = _runtime(client)
    with rt.db.read_session() as s:
        run_at = set(s.execute(select(Job.run_at).where(Job.pipeline_id == pipeline_id)).scalars())
    assert run_at == {at}  # every job it queued waits until then
    time.sleep(1.5)
    assert client.get(f"/api/v1/pipelines/{pipeline_id}", headers=h).json()["status"] == "queued"
    done = wait_pipeline(client, h, pipeline_id, timeout=60)
    assert done["status"] == "completed", done
    assert datetime.fromisoformat(done["started_at"]).replace(tzinfo=UTC) >= at
    with rt.db.read_session() as s:
        starts = list(s.execute(select(Job.started_at).where(Job.pipeline_id == pipeline_id)).scalars())
    assert starts and all(t is not None and t >= at for t in starts)  # no job ran early


def test_not_before_in_a_json_body_schedules_finalize_and_added_documents(client: TestClient) -> None:
    h = key_headers(client)
    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    draft_id = _draft(client, h, {"type": "text", "documents": RECORDS})
    r = client.post(f"/api/v1/kb-drafts/{draft_id}/finalize", json={"not_before": at.isoformat()}, headers=h)
    assert r.status_code == 202, r.text
    kb_id, first = r.json()["kb_id"], r.json()["pipeline_id"]
    more = [{"external_id": "late", "text": "A late record about llamas."}]
    r = client.post(
        f"/api/v1/kbs/{kb_id}/documents", json={"documents": more, "not_before": at.isoformat()}, headers=h
    )
    assert r.status_code == 202, r.text
    for pipeline_id in (first, r.json()["pipeline_id"]):
        state = client.get(f"/api/v1/pipelines/{pipeline_id}", headers=h).json()
        assert state["status"] == "queued" and datetime.fromisoformat(state["not_before"]) == at, state
    # the query and the body disagreeing is refused, and nothing is queued for it
    other = (at + timedelta(minutes=5)).isoformat()
    r = client.post(
        f"/api/v1/kbs/{kb_id}/documents",
        params={"not_before": other},
        json={"documents": more, "not_before": at.isoformat()},
        headers=h,
    )
    assert r.status_code == 422 and "twice" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("value", ["2026-12-08T09:00:00", "tomorrow", "2026-13-01T00:00:00Z"])
def test_a_not_before_without_a_zone_or_unreadable_is_a_422(client: TestClient, value: str) -> None:
    h = key_headers(client)
    draft_id = _draft(client, h, {"type": "text", "documents": RECORDS})
    r = client.post(f"/api/v1/kb-drafts/{draft_id}/finalize", params={"not_before": value}, headers=h)
    assert r.status_code == 422, r.text
    assert client.get(f"/api/v1/kb-drafts/{draft_id}", headers=h).status_code == 200  # still a draft


def test_a_not_before_in_the_past_starts_now(client: TestClient) -> None:
    h = key_headers(client)
    draft_id = _draft(client, h, {"type": "text", "documents": RECORDS})
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = client.post(f"/api/v1/kb-drafts/{draft_id}/finalize", params={"not_before": past}, headers=h)
    assert r.status_code == 202, r.text
    done = wait_pipeline(client, h, r.json()["pipeline_id"], timeout=60)
    assert done["status"] == "completed" and done["not_before"] is None, done


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><title>{title}</title></head><body><main><h1>{title}</h1>"
        f'{body}<a href="index.html">home</a> <a href="alpaca.html">alpaca</a> <a href="llama.html">llama</a>'
        "</main></body></html>"
    )


def test_a_scheduled_refresh_re_embeds_only_the_changed_page(client: TestClient, tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(_page("Farm", "<p>The farm keeps alpacas and llamas.</p>"))
    (root / "alpaca.html").write_text(_page("Alpacas", "<p>Alpacas are shorn once a year in spring.</p>"))
    (root / "llama.html").write_text(_page("Llamas", "<p>Llamas carry loads across the mountains.</p>"))
    h = key_headers(client)
    rt = _runtime(client)
    with serve(root) as site:
        for bad in ("5x", "1.5h", "24 h", "0s"):  # not digits and a unit, or below the minimum
            body = {"type": "web", "url": f"{site.url}/index.html", "refresh_every": bad}
            r = client.post("/api/v1/kb-drafts", json={"name": "x"}, headers=h)
            r = client.post(f"/api/v1/kb-drafts/{r.json()['id']}/sources", json=body, headers=h)
            assert r.status_code == 422, (bad, r.text)
        source = {
            "type": "web",
            "url": f"{site.url}/index.html",
            "crawl": {"max_depth": 1},
            "refresh_every": "3s",
        }
        started = client.post(f"/api/v1/kb-drafts/{_draft(client, h, source)}/finalize", headers=h).json()
        kb_id = started["kb_id"]
        assert wait_pipeline(client, h, started["pipeline_id"], timeout=120)["status"] == "completed"
        listed = client.get(f"/api/v1/kbs/{kb_id}/sources", headers=h).json()["items"]
        assert [(x["refresh_every"], x["next_refresh_at"] is not None) for x in listed] == [("3s", True)]

        time.sleep(1.1)  # Last-Modified has one-second resolution
        (root / "alpaca.html").write_text(
            _page("Alpacas", "<p>Alpacas are shorn every spring; fleece weighs 3 kg.</p>")
        )
        edited = datetime.now(UTC)

        def refresh_that_took_the_change() -> Pipeline | None:
            with rt.db.read_session() as s:
                rows = s.execute(
                    select(Pipeline).where(Pipeline.kb_id == kb_id, Pipeline.kind == "refresh")
                ).scalars()
                return next((p for p in rows if p.finished_at is not None and p.documents_total), None)

        # a refresh created just before the edit may be the one that fetches it: whichever does
        pipeline = wait_for(refresh_that_took_the_change, timeout=60, what="a scheduled refresh of the edit")
        docs = client.get(f"/api/v1/kbs/{kb_id}/documents", headers=h).json()["items"]
        alpaca = next(d for d in docs if d["external_id"].endswith("/alpaca.html"))
        assert pipeline.status == "completed", pipeline.error
        assert pipeline.documents_total == 1  # the changed page; the others were skipped unchanged
        assert pipeline.chunks_embedded == alpaca["chunk_count"] > 0  # that page's chunks, no other
        hits = client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "fleece weight"}, headers=h)
        assert "3 kg" in hits.json()["results"][0]["text"]
        with rt.db.read_session() as s:  # every other scheduled refresh found nothing to do
            others = s.execute(
                select(Pipeline.chunks_embedded).where(
                    Pipeline.kb_id == kb_id, Pipeline.kind == "refresh", Pipeline.id != pipeline.id
                )
            ).scalars()
            assert set(others) <= {0}
        # its next refresh moved on from the one it ran for
        after = client.get(f"/api/v1/kbs/{kb_id}/sources", headers=h).json()["items"][0]
        assert datetime.fromisoformat(after["next_refresh_at"]).replace(tzinfo=UTC) > edited
        # the KB's dashboard page shows when the source is refreshed next
        client.get("/login", params={"token": h["Authorization"].removeprefix("Bearer ")})
        listed = [client.get(f"/api/v1/kbs/{kb_id}/sources", headers=h).json()["items"][0]]
        page = client.get(f"/kbs/{kb_id}")
        listed.append(client.get(f"/api/v1/kbs/{kb_id}/sources", headers=h).json()["items"][0])
        assert page.status_code == 200 and 'id="sources"' in page.text
        row = page.text.split('id="sources"', 1)[1]
        shown = {x["next_refresh_at"][:19].replace("T", " ") for x in listed}  # it may move meanwhile
        assert "3s" in row and any(when in row for when in shown), (shown, row[:600])


def test_a_due_source_is_refreshed_once_and_not_while_its_last_crawl_goes_on(tmp_path: Path) -> None:
    """The compare-and-set and the in-flight rule, without workers (nothing runs the crawls)."""
    settings = make_settings(tmp_path / "data", crawl={"allow_private_networks": True})
    with TestClient(create_app(settings, workers=0)) as client:
        h = key_headers(client)
        rt = _runtime(client)
        source = {"type": "web", "url": "http://127.0.0.1:9/", "refresh_every": "60s"}
        started = client.post(f"/api/v1/kb-drafts/{_draft(client, h, source)}/finalize", headers=h).json()
        past = datetime.now(UTC) - timedelta(seconds=1)

        def make_due() -> datetime:
            with rt.db.session() as s:
                s.execute(update(Source).values(next_refresh_at=past))
            return past

        make_due()
        assert sources.refresh_due(rt) == []  # the first crawl's pipeline is still queued: skipped
        with rt.db.read_session() as s:
            moved = s.execute(select(Source.next_refresh_at)).scalar_one()
        assert moved is not None and moved > datetime.now(UTC) + timedelta(seconds=50)  # moved on anyway
        with rt.db.session() as s:  # the first crawl ends
            s.execute(update(Pipeline).values(status="completed", finished_at=datetime.now(UTC)))
            s.execute(update(Job).values(status="succeeded"))
        due_at = make_due()
        assert len(sources.refresh_due(rt)) == 1
        with rt.db.read_session() as s:
            source_id = s.execute(select(Source.id)).scalar_one()
        # a second worker that read the same due time finds it moved: no second pipeline
        assert sources._refresh_one(rt, source_id, due_at, datetime.now(UTC)) is None
        assert sources.refresh_due(rt) == []
        with rt.db.read_session() as s:
            kinds = sorted(
                s.execute(select(Pipeline.kind).where(Pipeline.kb_id == started["kb_id"])).scalars()
            )
        assert kinds == ["ingest", "refresh"]


def test_a_refresh_on_request_moves_the_next_scheduled_one(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", crawl={"allow_private_networks": True})
    with TestClient(create_app(settings, workers=0)) as client:
        h = key_headers(client)
        source = {"type": "web", "url": "http://127.0.0.1:9/", "refresh_every": "1h"}
        kb_id = client.post(f"/api/v1/kb-drafts/{_draft(client, h, source)}/finalize", headers=h).json()[
            "kb_id"
        ]
        first = client.get(f"/api/v1/kbs/{kb_id}/sources", headers=h).json()["items"][0]["next_refresh_at"]
        at = datetime.now(UTC) + timedelta(hours=2)
        r = client.post(f"/api/v1/kbs/{kb_id}/refresh", params={"not_before": at.isoformat()}, headers=h)
        assert r.status_code == 202, r.text
        moved = client.get(f"/api/v1/kbs/{kb_id}/sources", headers=h).json()["items"][0]["next_refresh_at"]
        assert datetime.fromisoformat(moved) == at + timedelta(hours=1) > datetime.fromisoformat(first)
        pipeline = client.get(f"/api/v1/pipelines/{r.json()['pipeline_id']}", headers=h).json()
        assert pipeline["status"] == "queued" and datetime.fromisoformat(pipeline["not_before"]) == at
        r = client.post(f"/api/v1/kbs/{kb_id}/refresh", params={"not_before": "2026-12-08 02:00"}, headers=h)
        assert r.status_code == 422, r.text  # no zone
