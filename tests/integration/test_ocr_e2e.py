"""A scanned PDF and a PNG uploaded through the HTTP API, OCR'd in the parse processes by the real
Tesseract, embedded and found by what only their pictures say; OCR off and a missing Tesseract
fail readably."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from factories import image_bytes, pdf_bytes, scanned_pdf_bytes
from lorebase.settings import ParseSettings
from support import tesseract


@pytest.fixture(autouse=True)
def _tesseract() -> None:
    tesseract.require()


SCAN = scanned_pdf_bytes(
    ["Invoice 4471: the harbour crane", "was repaired by Kestrel Marine", "for 9,300 euros."]
)
NOTE = image_bytes(["The ferry to Lindholm leaves", "at twenty past six every morning."])
TYPED = pdf_bytes(["Our office plants are watered on Fridays by the reception team."])


def test_a_scanned_pdf_and_a_png_are_ocrd_and_found(api: TestClient, auth: dict[str, str]) -> None:
    files = [
        ("files", ("invoice-scan.pdf", SCAN, "application/pdf")),
        ("files", ("ferry.png", NOTE, "application/octet-stream")),  # told by its bytes
        ("files", ("plants.pdf", TYPED, "application/pdf")),
    ]
    body = finalize_draft(api, auth, files=files, name="scans")
    state = wait_pipeline(api, auth, body["pipeline_id"])
    assert state["status"] == "completed", state
    docs = api.get(f"/api/v1/kbs/{body['kb_id']}/documents", headers=auth).json()["items"]
    ids = {d["filename"]: d["id"] for d in docs}
    assert {d["filename"]: d["media_type"] for d in docs}["ferry.png"] == "image/png"
    for name in ("invoice-scan.pdf", "ferry.png"):
        chunks = api.get(f"/api/v1/documents/{ids[name]}/chunks", headers=auth).json()["items"]
        assert chunks and {c["metadata"]["type"] for c in chunks} == {"ocr"}
        assert all(c["metadata"]["ocr_confidence"] > 60 for c in chunks)
    scan = api.get(f"/api/v1/documents/{ids['invoice-scan.pdf']}/chunks", headers=auth).json()["items"]
    assert "Kestrel Marine" in scan[0]["text"] and scan[0]["metadata"]["page"] == 1
    for question, expected in {
        "Who repaired the harbour crane?": "invoice-scan.pdf",
        "When does the ferry to Lindholm leave?": "ferry.png",
    }.items():
        r = api.post(
            f"/api/v1/kbs/{body['kb_id']}/search",
            json={"query": question, "mode": "hybrid", "top_k": 3},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        assert ids[expected] in [hit["document_id"] for hit in r.json()["results"]], r.json()


def test_with_ocr_off_a_scanned_pdf_fails_permanently(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", parse=ParseSettings(ocr=False), jobs={"parse_processes": 1})
    with running_app(settings, workers=1) as client:
        auth = key_headers(client)
        files = [
            ("files", ("invoice-scan.pdf", SCAN, "application/pdf")),
            ("files", ("plants.pdf", TYPED, "application/pdf")),
        ]
        body = finalize_draft(client, auth, files=files, name="no-ocr")
        state = wait_pipeline(client, auth, body["pipeline_id"])
        assert state["counts"]["documents_failed"] == 1, state
        docs = client.get(f"/api/v1/kbs/{body['kb_id']}/documents", headers=auth).json()["items"]
        scan = next(d for d in docs if d["filename"] == "invoice-scan.pdf")
        assert scan["status"] == "failed" and scan["error_kind"] == "permanent", scan
        assert "no text layer; OCR is off" in scan["error"]
        # a preview parses in the API process: the same setting holds there
        draft_id = client.post("/api/v1/kb-drafts", json={"name": "photo"}, headers=auth).json()["id"]
        r = client.post(
            f"/api/v1/kb-drafts/{draft_id}/sources",
            files=[("files", ("ferry.png", NOTE, "image/png"))],
            headers=auth,
        )
        assert r.status_code == 201, r.text
        r = client.post(f"/api/v1/kb-drafts/{draft_id}/preview", headers=auth)
        assert r.status_code == 422 and "cannot preview ferry.png: OCR is off" in r.text, r.text
        report = client.post(f"/api/v1/kb-drafts/{draft_id}/validate", headers=auth).json()
        assert [e["message"] for e in report["errors"]] == [
            "1 image file(s) need OCR (ferry.png): OCR is off (LOREBASE_PARSE__OCR=false)"
        ]


def test_a_draft_with_images_is_invalid_without_tesseract(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", parse=ParseSettings(tesseract_cmd="/nonexistent/tesseract"))
    with running_app(settings, workers=0) as client:
        auth = key_headers(client)
        r = client.post("/api/v1/kb-drafts", json={"name": "photos"}, headers=auth)
        draft_id = r.json()["id"]
        r = client.post(
            f"/api/v1/kb-drafts/{draft_id}/sources",
            files=[
                ("files", ("ferry.png", NOTE, "image/png")),
                ("files", ("plants.pdf", TYPED, "application/pdf")),
            ],
            headers=auth,
        )
        assert r.status_code == 201, r.text
        report = client.post(f"/api/v1/kb-drafts/{draft_id}/validate", headers=auth).json()
        assert report["is_valid"] is False
        assert {
            "field": "sources",
            "message": "1 image file(s) need OCR (ferry.png): Tesseract is not installed (looked for "
            "'/nonexistent/tesseract', setting parse.tesseract_cmd) (apt install tesseract-ocr tesseract-ocr-eng)",
        } in report["errors"]
