"""A PDF uploaded through the HTTP API, laid out in a parse process and found by a table row."""

from __future__ import annotations

from fastapi.testclient import TestClient
from fpdf import FPDF

from conftest import finalize_draft, wait_pipeline
from factories import pdf_bytes


def _price_list() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.multi_cell(0, 10, "Harbour Ferry Timetable", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(
        0, 6, "Ferries leave from pier two. Tickets are sold on board.", new_x="LMARGIN", new_y="NEXT"
    )
    pdf.ln(4)
    with pdf.table() as table:
        for values in [
            ["Destination", "Departure", "Fare"],
            ["Lighthouse Island", "07:15", "4 EUR"],
            ["Seal Rock", "09:40", "6 EUR"],
            ["Old Fort", "13:05", "5 EUR"],
        ]:
            row = table.row()
            for value in values:
                row.cell(value)
    return bytes(pdf.output())


def test_a_question_answered_only_by_a_pdf_table_row_finds_that_pdf(
    api: TestClient, auth: dict[str, str]
) -> None:
    files = [
        ("files", ("ferry.pdf", _price_list(), "application/pdf")),
        (
            "files",
            (
                "seals.pdf",
                pdf_bytes(["Seals rest on the rocks in the harbour at low tide."]),
                "application/pdf",
            ),
        ),
        (
            "files",
            (
                "fort.pdf",
                pdf_bytes(["The old fort was built in 1702 to guard the harbour."]),
                "application/pdf",
            ),
        ),
    ]
    body = finalize_draft(api, auth, files=files, name="pdfs", config={"chunking": {"strategy": "structure"}})
    state = wait_pipeline(api, auth, body["pipeline_id"])
    assert state["status"] == "completed", state
    kb_id = body["kb_id"]
    docs = api.get(f"/api/v1/kbs/{kb_id}/documents", headers=auth).json()["items"]
    ids = {d["filename"]: d["id"] for d in docs}
    chunks = api.get(f"/api/v1/documents/{ids['ferry.pdf']}/chunks", headers=auth).json()["items"]
    table = [c for c in chunks if "Seal Rock | 09:40 | 6 EUR" in c["text"]]
    assert len(table) == 1 and table[0]["metadata"]["page"] == 1
    assert table[0]["metadata"]["section"] == ["Harbour Ferry Timetable"]

    r = api.post(
        f"/api/v1/kbs/{kb_id}/search",
        json={"query": "When does the ferry to Seal Rock depart?", "mode": "hybrid", "top_k": 3},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert ids["ferry.pdf"] in [hit["document_id"] for hit in r.json()["results"]][:3]
