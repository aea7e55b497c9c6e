"""PPTX, XLSX, CSV, EPUB and e-mail uploaded through the HTTP API, parsed in the parse processes,
chunked, embedded and found: each question's answer lives only in a slide's speaker notes, a
spreadsheet cell, a CSV row, an EPUB chapter or an e-mail body."""

from __future__ import annotations

from fastapi.testclient import TestClient

from conftest import finalize_draft, wait_pipeline
from factories import csv_bytes, eml_bytes, epub_bytes, pptx_bytes, xlsx_bytes

DECK = pptx_bytes(
    [
        ("Volcano field trip", ["Bus leaves at eight", "Bring boots and water"], None),
        (
            "Safety briefing",
            ["Stay on the marked path"],
            "Tell the students that the crater rim of Mount Vesuvius is 1281 metres high.",
        ),
    ]
)
BOOK = xlsx_bytes(
    {
        "Inventory": [
            ["Part", "Warehouse", "Quantity"],
            ["Titanium bolt", "Rotterdam", 4410],
            ["Copper washer", "Lyon", 75],
        ],
        "Suppliers": [["Supplier", "Country"], ["Nordic Metals", "Norway"]],
    }
)
TABLE = csv_bytes(
    [
        ["species", "habitat", "wingspan_cm"],
        ["Wandering albatross", "Southern Ocean", 311],
        ["Barn owl", "farmland", 95],
    ]
)
NOVEL = epub_bytes(
    "The Lighthouse Keeper",
    [
        ("Arrival", "<h1>Arrival</h1><p>Martha arrived on the island on a grey morning in March.</p>"),
        (
            "The Storm",
            "<h1>The Storm</h1><p>During the storm the lamp's clockwork stopped, and Martha turned the lens by hand all night.</p>",
        ),
    ],
)
MEMO = eml_bytes(
    "Quarterly offsite",
    "Hi all,\n\nThe quarterly offsite moves to the old mill in Ghent on the fourth of March.\n\nAda",
    attachments=[("agenda.pdf", "application/pdf", b"%PDF-1.4 agenda")],
)
FILES = [
    (
        "files",
        ("volcano.pptx", DECK, "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    ),
    ("files", ("inventory.xlsx", BOOK, "application/octet-stream")),  # told apart by its zip directory
    ("files", ("birds.csv", TABLE, "text/csv")),
    ("files", ("lighthouse.epub", NOVEL, "application/epub+zip")),
    ("files", ("offsite.eml", MEMO, "message/rfc822")),
]
QUESTIONS = {  # question -> the one document that answers it
    "How high is the crater rim of Vesuvius?": "volcano.pptx",
    "How many titanium bolts are in the Rotterdam warehouse?": "inventory.xlsx",
    "What is the wingspan of the wandering albatross?": "birds.csv",
    "What did Martha do when the lamp's clockwork stopped during the storm?": "lighthouse.epub",
    "Where is the quarterly offsite?": "offsite.eml",
}


def test_each_new_format_is_indexed_and_found_by_what_only_it_says(
    api: TestClient, auth: dict[str, str]
) -> None:
    body = finalize_draft(
        api, auth, files=FILES, name="formats", config={"chunking": {"strategy": "structure"}}
    )
    state = wait_pipeline(api, auth, body["pipeline_id"])
    assert state["status"] == "completed", state
    assert state["counts"]["documents_total"] == 5 and state["counts"]["documents_failed"] == 0
    kb_id = body["kb_id"]
    docs = api.get(f"/api/v1/kbs/{kb_id}/documents", headers=auth).json()["items"]
    ids = {d["filename"]: d["id"] for d in docs}
    assert {d["filename"]: d["media_type"] for d in docs} == {
        "volcano.pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "inventory.xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "birds.csv": "text/csv",
        "lighthouse.epub": "application/epub+zip",
        "offsite.eml": "message/rfc822",
    }
    titles = {d["filename"]: d["title"] for d in docs}
    assert (
        titles["lighthouse.epub"] == "The Lighthouse Keeper" and titles["offsite.eml"] == "Quarterly offsite"
    )
    assert sum(d["chunk_count"] for d in docs) <= 15  # small: the model embeds ~20 chunks/s
    # what the parser says of a document is kept on it: an e-mail's headers, its refused attachment
    mail = next(d for d in docs if d["filename"] == "offsite.eml")["metadata"]["parsed"]
    assert mail["subject"] == "Quarterly offsite" and mail["warnings"]
    assert [a["filename"] for a in mail["attachments"]] == ["agenda.pdf"]

    chunks = api.get(f"/api/v1/documents/{ids['inventory.xlsx']}/chunks", headers=auth).json()["items"]
    assert {c["metadata"]["type"] for c in chunks} == {"table"}
    deck = api.get(f"/api/v1/documents/{ids['volcano.pptx']}/chunks", headers=auth).json()["items"]
    notes = [c for c in deck if "Notes: Tell the students" in c["text"]]
    assert [(c["metadata"]["page"], c["metadata"]["type"]) for c in notes] == [(2, "text")]

    for question, expected in QUESTIONS.items():
        r = api.post(
            f"/api/v1/kbs/{kb_id}/search",
            json={"query": question, "mode": "hybrid", "top_k": 3},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        top3 = [hit["document_id"] for hit in r.json()["results"]]
        assert ids[expected] in top3, (
            question,
            [(h["filename"], h["text"][:80]) for h in r.json()["results"]],
        )
