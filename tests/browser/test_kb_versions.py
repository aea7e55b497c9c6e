"""The KB page's versions panel in a real browser: re-index from the form, follow the building
version live until it goes live, then roll back to version 1 with its Activate button."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from browser.conftest import Server, Watched

pytestmark = pytest.mark.embedded_only("drives `lorebase serve` and `lorebase worker` processes")

BUILD_TIMEOUT = 180_000  # ms: a worker's first embedding loads the model
RECORDS = [
    ("octopus", "Octopus", "An octopus has three hearts and blue blood. It can change colour in a blink."),
    ("comets", "Comets", "Comets grow a glowing tail of gas and dust when they pass near the Sun."),
    ("bees", "Bees", "Honey bees dance to tell their hive where the flowers are and how far away."),
]
EVALUATION = {
    "queries": [
        {"id": "q1", "text": "how many hearts does an octopus have"},
        {"id": "q2", "text": "how do bees tell their hive where flowers are"},
    ],
    "qrels": {"q1": {"octopus": 1}, "q2": {"bees": 1}},
}


def _wait_ready(api: httpx.Client, kb_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + BUILD_TIMEOUT / 1000
    while time.monotonic() < deadline:
        kb: dict[str, Any] = api.get(f"/api/v1/kbs/{kb_id}").json()
        if kb["status"] == "ready":
            return kb
        time.sleep(0.3)
    raise AssertionError(f"knowledge base {kb_id} did not become ready: {kb}")


def _small_kb(server: Server) -> str:
    """A KB of three short text records, built by a worker that is then stopped."""
    with server.api() as api:
        draft_id = api.post("/api/v1/kb-drafts", json={"name": "Versions"}).json()["id"]
        docs = [{"external_id": e, "title": t, "text": x} for e, t, x in RECORDS]
        r = api.post(f"/api/v1/kb-drafts/{draft_id}/sources", json={"type": "text", "documents": docs})
        assert r.status_code == 201, r.text
        r = api.post(f"/api/v1/kb-drafts/{draft_id}/finalize")
        assert r.status_code == 202, r.text
        kb_id: str = r.json()["kb_id"]
        server.start_worker()
        _wait_ready(api, kb_id)
    server.stop_workers()
    return kb_id


def test_reindex_from_the_form_goes_live_then_activate_rolls_back_to_version_1(
    api_only_server: Server, page: Watched
) -> None:
    server, pg = api_only_server, page.page
    kb_id = _small_kb(server)
    with server.api() as api:
        v1_size = api.get(f"/api/v1/kbs/{kb_id}").json()["config"]["chunking"]["chunk_size"]
    streams: list[str] = []
    pg.on("request", lambda r: streams.append(r.url) if "/events" in r.url else None)
    pg.goto(server.sign_in_url.replace("next=%2F", f"next=/kbs/{kb_id}"))
    expect(pg).to_have_url(f"{server.url}/kbs/{kb_id}")

    rows = pg.locator("#versions-table tbody tr")
    expect(rows).to_have_count(1)
    v1 = pg.locator('#versions-table tr[data-version="1"]')
    expect(v1.locator(".badge")).to_have_text("live")
    expect(v1.locator("td").nth(2)).to_have_text(str(v1_size))
    expect(pg.locator("#versions-live")).to_have_text("live: version 1")

    # a refused change is explained next to the form, and nothing is built
    pg.fill("#reindex-form input[name=chunk_size]", "16")
    pg.fill("#reindex-form input[name=chunk_overlap]", "8")
    pg.click("#reindex-form button[type=submit]")
    expect(pg.locator("#versions-notice")).to_contain_text("chunk_overlap must be under half of chunk_size")
    expect(rows).to_have_count(1)

    # re-index with a smaller chunk size: no worker runs yet, so version 2 waits, followed live
    pg.fill("#reindex-form input[name=chunk_overlap]", "4")
    pg.click("#reindex-form button[type=submit]")
    expect(pg.locator("#versions-notice")).to_have_text("Version 2 is building.")
    v2 = pg.locator('#versions-table tr[data-version="2"]')
    expect(v2.locator(".badge")).to_have_text("building")
    expect(v2.locator("progress")).to_be_visible()
    expect(v2.locator("button[data-cancel]")).to_be_enabled()
    expect(v2.locator("td").nth(2)).to_have_text("16")
    expect(v1.locator(".badge")).to_have_text("live")  # searches keep using version 1
    page.shot("versions-building")

    server.start_worker()
    expect(v2.locator(".badge")).to_have_text("live", timeout=BUILD_TIMEOUT)
    expect(pg.locator("#versions-live")).to_have_text("live: version 2")
    expect(v1.locator(".badge")).to_have_text("retired")
    chunks = {n: int(pg.locator(f'tr[data-version="{n}"] .version-chunks').inner_text()) for n in (1, 2)}
    assert chunks[2] > chunks[1] >= len(RECORDS)  # smaller chunks, more of them
    # the KB's own counts follow the live version without a reload
    expect(pg.locator('#kb-counts [data-count="chunks"]')).to_have_text(str(chunks[2]))
    assert any("/pipelines/" in url for url in streams), "the building version was not followed live"
    page.shot("versions-live")

    # rollback: version 1's Activate button
    v1.locator("button[data-activate]").click()
    expect(pg.locator("#versions-notice")).to_have_text("Version 1 is live.")
    expect(v1.locator(".badge")).to_have_text("live")
    expect(v2.locator(".badge")).to_have_text("retired")
    expect(pg.locator("#versions-live")).to_have_text("live: version 1")
    expect(pg.locator('#kb-counts [data-count="chunks"]')).to_have_text(str(chunks[1]))
    expect(v2.locator("button[data-activate]")).to_be_visible()
    page.shot("versions-rolled-back")

    with server.api() as api:
        listing = api.get(f"/api/v1/kbs/{kb_id}/versions").json()
        kb = api.get(f"/api/v1/kbs/{kb_id}").json()
    assert listing["live"] == 1
    assert {v["version"]: v["status"] for v in listing["items"]} == {1: "live", 2: "retired"}
    assert kb["version"] == 1 and kb["config"]["chunking"]["chunk_size"] == v1_size

    # version 3, built with an evaluation against the live version 1: its nDCG@10 is charted
    with server.api() as api:
        body = {
            "config": {"chunking": {"chunk_size": 24, "chunk_overlap": 4}},
            "activate": "if_better",  # (a "manual" version's evaluation is never run: left queued)
            "evaluation": EVALUATION,
        }
        r = api.patch(f"/api/v1/kbs/{kb_id}", json=body)
        assert r.status_code == 202, r.text
    v3 = pg.locator('#versions-table tr[data-version="3"]')
    pg.reload()
    # followed live; live or complete as its nDCG@10 compares with version 1's
    expect(v3.locator(".badge")).to_have_text(re.compile("^(live|complete)$"), timeout=BUILD_TIMEOUT)
    expect(v3.locator(".version-message")).to_contain_text("evaluation completed", timeout=60_000)
    bars = pg.locator("#evaluations svg.chart rect.bar")
    expect(bars).to_have_count(2)  # versions 1 and 3 side by side; if_better evaluates hybrid
    assert [bars.nth(i).get_attribute("data-version") for i in range(2)] == ["1", "3"]
    assert {bars.nth(i).get_attribute("data-mode") for i in range(2)} == {"hybrid"}
    assert all(0 < float(bars.nth(i).get_attribute("data-value") or 0) <= 1 for i in range(2))
    page.shot("versions-evaluation")
    assert page.dialogs == [] and page.csp_violations == []
