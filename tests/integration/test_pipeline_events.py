"""``GET /pipelines/{id}/events``: Server-Sent Events from the pipeline's event log, over a real
HTTP connection. A client that disconnects in the middle of a pipeline and reconnects with
``Last-Event-ID`` receives every event exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import make_settings
from lorebase.services.auth import create_key
from support.live import Live, live_server

FINAL = {"completed", "completed_with_errors", "failed", "cancelled"}


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse an event stream as a browser's EventSource does (id / event / data fields)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                yield {
                    "id": int(event["id"]),
                    "event": event.get("event", "message"),
                    "data": json.loads(event["data"]),
                }
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    # every embed batch takes a little longer: the pipeline is surely still running at the disconnect
    monkeypatch.setenv("LOREBASE_FAULTS", "embed.after_batch=sleep:0.4")
    with live_server(make_settings(tmp_path / "data", embed_batch_size=4)) as live:
        yield live


def _client(live: Live, workspace: str = "default") -> httpx.Client:
    key, _ = create_key(live.app.state.runtime.db, workspace=workspace)
    return httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _start(client: httpx.Client, n: int) -> dict[str, Any]:
    draft = client.post("/api/v1/kb-drafts", json={"name": "events"}).json()
    docs = [
        {"external_id": f"r{i}", "title": f"Record {i}", "text": f"Record {i} is about topic {i % 5}. " * 12}
        for i in range(n)
    ]
    r = client.post(f"/api/v1/kb-drafts/{draft['id']}/sources", json={"type": "text", "documents": docs})
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/kb-drafts/{draft['id']}/finalize")
    assert r.status_code == 202, r.text
    return dict(r.json())


def _read(
    client: httpx.Client, pipeline_id: str, *, last: int | None = None, stop_after: int | None = None
) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    got: list[dict[str, Any]] = []
    with client.stream("GET", f"/api/v1/pipelines/{pipeline_id}/events", headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for event in sse(r):
            got.append(event)
            if stop_after is not None and len(got) >= stop_after:
                break  # leaving the block closes the connection mid-stream
    return got


def test_reconnect_with_last_event_id_gets_every_event_exactly_once(server: Live) -> None:
    n = 24
    with _client(server) as client:
        pid = _start(client, n)["pipeline_id"]
        first = _read(client, pid, stop_after=6)
        assert client.get(f"/api/v1/pipelines/{pid}").json()["status"] not in FINAL, (
            "disconnected mid-pipeline"
        )
        time.sleep(1.0)  # the pipeline goes on while nobody listens
        rest = _read(client, pid, last=first[-1]["id"])
        whole = _read(client, pid)  # a fresh watcher gets the story from the start

    received = first + rest
    ids = [e["id"] for e in received]
    assert ids == list(range(1, len(ids) + 1)), "no gap, no repeat, in order"
    assert received == whole, "what the reconnecting client got is the whole log"
    assert rest, "events happened while disconnected and came after the reconnect"

    end = received[-1]
    assert end["event"] == "end" and [e["event"] for e in received].count("end") == 1
    assert end["data"]["status"] == "completed" and end["data"]["progress"] == 100
    assert end["data"]["counts"]["documents_done"] == n

    docs = [e["data"] for e in received if e["event"] == "document"]
    final_status = {d["document_id"]: d["status"] for d in docs}
    assert len(final_status) == n and set(final_status.values()) == {"indexed"}
    for doc_id in final_status:  # each document's transitions, in the order they happened
        path = [d["status"] for d in docs if d["document_id"] == doc_id]
        assert path[0] == "parsing" and path[-1] == "indexed", path
    progress = [e["data"]["progress"] for e in received if e["event"] in ("pipeline", "end")]
    assert progress == sorted(progress), "the bar never moves backwards"
    assert all(e["data"]["id"] == pid for e in received if e["event"] != "document")


def test_events_of_an_ended_pipeline_and_errors(server: Live) -> None:
    with _client(server) as client:
        pid = _start(client, 2)["pipeline_id"]
        events = _read(client, pid)  # returns when the stream closes after `end`
        assert events[-1]["event"] == "end"
        # nothing after the end: 204 tells EventSource to stop reconnecting
        r = client.get(f"/api/v1/pipelines/{pid}/events", headers={"Last-Event-ID": str(events[-1]["id"])})
        assert r.status_code == 204
        # resuming from the middle by query parameter (clients that cannot set headers)
        with client.stream("GET", f"/api/v1/pipelines/{pid}/events", params={"after": events[-3]["id"]}) as r:
            tail = list(sse(r))
        assert tail == events[-2:]
        r = client.get(f"/api/v1/pipelines/{pid}/events", headers={"Last-Event-ID": "abc"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    with _client(server, workspace="other") as stranger:
        r = stranger.get(f"/api/v1/pipelines/{pid}/events")
        assert r.status_code == 404, "another workspace's pipeline does not exist for it"
    r = httpx.get(f"{server.url}/api/v1/pipelines/{pid}/events")
    assert r.status_code == 401
