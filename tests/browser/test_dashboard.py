"""The dashboard in a real browser against a real ``lorebase serve``: sign in with the printed
link, build a KB through the wizard, watch it finish, search it and leave feedback; and hostile
document text stays inert text everywhere it is shown."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from browser.conftest import Server, Watched
from lorebase.tasks import REGISTRY

pytestmark = pytest.mark.embedded_only("drives `lorebase serve` with its own embedded workers")

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
BUILD_TIMEOUT = 180_000  # ms: the first embedding loads the model


def _drop_file(page: Any, selector: str, name: str, text: str) -> None:
    """Drag-and-drop as the browser delivers it: a ``drop`` event whose DataTransfer holds a File."""
    transfer = page.evaluate_handle(
        """([name, text]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], name, { type: "text/markdown" }));
            return dt;
        }""",
        [name, text],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_sign_in_build_a_kb_in_the_wizard_search_it_and_leave_feedback(
    server: Server, page: Watched, tmp_path: Path
) -> None:
    pg = page.page
    octopus = tmp_path / "octopus.md"
    octopus.write_text(
        "# Octopus\n\n## Hearts\n\nAn octopus has three hearts and blue blood rich in hemocyanin.\n"
    )
    comets = "# Comets\n\nComets grow a glowing tail of gas and dust when they pass near the Sun.\n"

    # 1. the sign-in link `lorebase serve` printed
    pg.goto(server.sign_in_url)
    expect(pg).to_have_url(f"{server.url}/")
    expect(pg.locator("h1")).to_contain_text("Knowledge bases")

    # 2. the wizard: draft, two files (one chosen, one dropped), settings, preview, finalize
    pg.click("text=New knowledge base")
    expect(pg).to_have_url(f"{server.url}/kbs/new")
    pg.fill("#kb-name-input", "Animals and sky")
    pg.click("text=Create draft")
    expect(pg.locator("section[data-step=sources]")).to_be_visible()
    pg.set_input_files("#file-input", str(octopus))
    expect(pg.locator("#sources tbody tr")).to_have_count(1)
    _drop_file(pg, "#dropzone", "comets.md", comets)
    expect(pg.locator("#sources tbody tr")).to_have_count(2)
    expect(pg.locator("#sources .source-name")).to_have_text(["octopus.md", "comets.md"])
    pg.click("#to-settings")
    pg.fill("input[name=chunk_size]", "128")
    pg.click("text=Save and preview")
    expect(pg.locator("#preview li.chunk").first).to_contain_text("three hearts", timeout=60_000)
    expect(pg.locator("#validation li.ok")).to_contain_text("Valid")
    page.shot("wizard-preview")
    pg.click("#to-finalize")
    pg.click("#finalize")
    pg.wait_for_url(re.compile(rf"/kbs/{UUID}$"))
    kb_id = pg.url.rsplit("/", 1)[1]

    # 3. the live progress bar reaches 100 % and the documents table is refreshed
    expect(pg.locator("#progress-text")).to_have_text("100 %", timeout=BUILD_TIMEOUT)
    expect(pg.locator("#progress")).to_have_attribute("value", "100")
    expect(pg.locator("#pipeline-status .badge")).to_have_text("completed")
    expect(pg.locator("#documents tbody tr")).to_have_count(2)
    expect(pg.locator("#documents .badge-indexed")).to_have_count(2)
    expect(pg.locator("#kb-status .badge")).to_have_text("ready")
    page.shot("kb-completed")

    # 4. the playground: ranked chunks with source and section, then feedback
    pg.click("text=Search")
    expect(pg.locator("#search-kb")).to_have_value(kb_id)
    pg.fill("#search-query", "how many hearts does an octopus have")
    pg.click("#search-form button[type=submit]")
    first = pg.locator("#results li.result").first
    expect(first.locator(".result-title")).to_have_text("Octopus", timeout=60_000)
    expect(first.locator(".section")).to_contain_text("Octopus")  # the heading path
    expect(first.locator(".chunk-text")).to_contain_text("three hearts")
    pg.click("button[data-feedback=negative]")
    expect(pg.locator("#feedback-status")).to_have_text("Feedback recorded: negative")
    pg.click("button[data-feedback=positive]")
    expect(pg.locator("#feedback-status")).to_have_text("Feedback recorded: positive")
    expect(pg.locator("button[data-feedback=positive]")).to_have_attribute("aria-pressed", "true")
    page.shot("search-feedback")

    # 5. the feedback is in the query log, through the JSON API with the Bearer key
    with server.api() as api:
        log = api.get(f"/api/v1/kbs/{kb_id}/queries").json()
    assert [(q["query"], q["feedback"]) for q in log["items"]] == [
        ("how many hearts does an octopus have", "positive")
    ]
    assert log["items"][0]["result_count"] >= 1
    pg.goto(f"{server.url}/kbs/{kb_id}/queries")
    expect(pg.locator("#queries tbody tr")).to_have_count(1)
    expect(pg.locator("#queries .badge-positive")).to_have_text("positive")
    page.shot("query-log")
    pg.goto(f"{server.url}/jobs")
    expect(pg.locator("#queue [data-stat=succeeded]")).not_to_have_text("0")
    periodic = [spec.name for spec in REGISTRY if spec.every is not None]  # blob_gc, retention, …
    expect(pg.locator("#periodic tbody tr")).to_have_count(len(periodic))
    expect(pg.locator("#periodic tr[data-task=blob_gc] td").nth(3)).not_to_have_text("never")  # ticked
    page.shot("jobs")

    assert page.dialogs == [] and page.csp_violations == []


def test_hostile_document_text_and_title_stay_inert_text(api_only_server: Server, page: Watched) -> None:
    server, pg = api_only_server, page.page
    with server.api() as api:
        r = api.post("/api/v1/kb-drafts", json={"name": HOSTILE})
        draft_id = r.json()["id"]
        body = {"type": "text", "documents": [{"external_id": "x", "title": HOSTILE, "text": HOSTILE}]}
        assert api.post(f"/api/v1/kb-drafts/{draft_id}/sources", json=body).status_code == 201
        r = api.post(f"/api/v1/kb-drafts/{draft_id}/finalize")
        assert r.status_code == 202, r.text
        kb_id = r.json()["kb_id"]

    streams: list[str] = []
    pg.on("request", lambda r: streams.append(r.url) if "/events" in r.url else None)
    pg.goto(server.sign_in_url.replace("next=%2F", f"next=/kbs/{kb_id}"))
    expect(pg).to_have_url(f"{server.url}/kbs/{kb_id}")
    # no worker yet: the pipeline waits, the page follows it live
    expect(pg.locator("#pipeline")).to_have_attribute("data-live", "true")
    expect(pg.locator("#kb-name")).to_have_text(HOSTILE)
    expect(pg.locator("#documents td.doc-title")).to_have_text([HOSTILE])  # rendered by Jinja
    # the controls act through the JSON API with the session cookie and the CSRF header
    pg.click("button[data-action=pause]")
    expect(pg.locator("#pipeline-status .badge")).to_have_text("paused")
    expect(pg.locator("button[data-action=resume]")).to_be_enabled()
    pg.click("button[data-action=resume]")
    expect(pg.locator("#pipeline-status .badge")).to_have_text("running")
    server.start_worker()
    expect(pg.locator("#progress-text")).to_have_text("100 %", timeout=BUILD_TIMEOUT)
    expect(pg.locator("#documents .badge-indexed")).to_have_count(1)  # rebuilt by kb.js
    expect(pg.locator("#documents td.doc-title")).to_have_text([HOSTILE])
    assert pg.locator("#documents img, #documents script").count() == 0
    # the title links to the original: a download (attachment), never rendered as a page
    link = pg.locator("#documents td.doc-title a")
    expect(link).to_have_attribute("href", re.compile(r"^/api/v1/documents/[0-9a-f-]{36}/original$"))
    with pg.expect_download() as download:
        link.click()
    assert HOSTILE in Path(download.value.path()).read_text()
    expect(pg).to_have_url(f"{server.url}/kbs/{kb_id}")
    assert streams, "the KB page did not open the pipeline's event stream"
    page.shot("xss-kb-page")

    pg.goto(f"{server.url}/search?kb={kb_id}")
    pg.fill("#search-query", "alert")
    pg.click("#search-form button[type=submit]")
    result = pg.locator("#results li.result")
    expect(result).to_have_count(1, timeout=60_000)
    expect(result.locator(".result-title")).to_have_text(HOSTILE)
    expect(result.locator(".chunk-text")).to_contain_text(HOSTILE)
    assert pg.locator("#results img, #results script").count() == 0
    pg.wait_for_timeout(300)  # time for an injected <img onerror> to have fired, had it existed
    page.shot("xss-search")

    pg.goto(f"{server.url}/")
    expect(pg.locator("#kbs td a")).to_have_text([HOSTILE])
    assert page.dialogs == []
    assert pg.evaluate("document.querySelectorAll('img[src=x]').length") == 0
