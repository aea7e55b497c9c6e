"""The embedded KB end to end, driven through the HTTP API as a client would."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from conftest import finalize_draft, wait_pipeline
from factories import docx_bytes, html_page, pdf_bytes

PDF = pdf_bytes(
    [
        "Glaciers form where snow accumulates faster than it melts, compacting into dense ice over centuries.",
        "The Aletsch glacier in Switzerland is the largest glacier in the Alps, about 23 kilometres long.",
    ],
    title="Glaciers",
)
DOCX = docx_bytes(
    "Coffee roasting",
    [
        ("Green beans", "Unroasted coffee beans are green and smell grassy."),
        (
            "First crack",
            "At about 196 degrees Celsius the beans pop audibly: roasters call this the first crack.",
        ),
    ],
    table=[["Roast", "Temperature"], ["Light", "205 C"], ["Dark", "225 C"]],
)
MARKDOWN = (
    b"# Honeybees\n\n## Communication\n\nForager bees perform a waggle dance to tell their sisters "
    b"the direction and distance of flowers.\n\n- round dance: food is near\n- waggle dance: food is far\n"
)
HTML = html_page(
    "Plate tectonics",
    "Subduction",
    "Where an oceanic plate slides beneath a continental plate, deep trenches and volcanic arcs form.",
)
RECORDS = [
    {
        "external_id": "lighthouse",
        "title": "Lighthouses",
        "text": "A Fresnel lens lets a lighthouse beam be seen from over 20 nautical miles away.",
    },
    {
        "external_id": "sourdough",
        "title": "Sourdough",
        "text": "Sourdough bread rises thanks to wild yeast and lactobacilli living in the starter.",
    },
]
FILES = [
    ("files", ("glaciers.pdf", PDF, "application/pdf")),
    (
        "files",
        ("coffee.docx", DOCX, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ),
    ("files", ("bees.md", MARKDOWN, "text/markdown")),
    ("files", ("tectonics.html", HTML, "text/html")),
]
QUESTIONS = {  # question -> the one document that answers it
    "How long is the largest glacier in the Alps?": "glaciers.pdf",
    "At what temperature does the first crack happen when roasting coffee?": "coffee.docx",
    "How do forager bees tell others where flowers are?": "bees.md",
    "What forms where an oceanic plate slides under a continent?": "tectonics.html",
    "How far can a lighthouse beam be seen?": "lighthouse",
}


def _finalized_kb(
    api: TestClient, auth: dict[str, str], files: list[Any], records: list[dict[str, Any]]
) -> dict[str, Any]:
    body = finalize_draft(
        api, auth, files=files, records=records, name="e2e", config={"chunking": {"strategy": "structure"}}
    )
    assert body["status"] == "processing" and body["tracking_url"].endswith(body["pipeline_id"])
    assert api.get(f"/api/v1/kb-drafts/{body['draft_id']}", headers=auth).status_code == 404
    kb = api.get(f"/api/v1/kbs/{body['kb_id']}", headers=auth).json()
    assert kb["config"]["chunking"] == {"strategy": "structure", "chunk_size": 200, "chunk_overlap": 20}
    return body


def _doc_ids(api: TestClient, auth: dict[str, str], kb_id: str) -> dict[str, str]:
    docs = api.get(f"/api/v1/kbs/{kb_id}/documents", headers=auth).json()["items"]
    return {(d["filename"] or d["external_id"]): d["id"] for d in docs}


def test_draft_to_search_across_every_format(api: TestClient, auth: dict[str, str]) -> None:
    r = api.post("/api/v1/kb-drafts", json={"name": "formats"}, headers=auth)
    draft_id = r.json()["id"]
    r = api.patch(
        f"/api/v1/kb-drafts/{draft_id}",
        json={"config": {"chunking": {"strategy": "structure"}}},
        headers=auth,
    )
    assert (
        r.json()["config"]["chunking"]["strategy"] == "structure"
        and r.json()["config"]["chunking"]["chunk_size"] == 200
    )
    r = api.post(f"/api/v1/kb-drafts/{draft_id}/sources", files=FILES, headers=auth)
    assert [s["media_type"] for s in r.json()["sources"]] == [
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "text/markdown",
        "text/html",
    ]
    pdf_source = r.json()["sources"][0]["id"]
    api.post(
        f"/api/v1/kb-drafts/{draft_id}/sources", json={"type": "text", "documents": RECORDS}, headers=auth
    )

    preview = api.post(
        f"/api/v1/kb-drafts/{draft_id}/preview", json={"source_id": pdf_source}, headers=auth
    ).json()
    assert [c["metadata"]["page"] for c in preview["chunks"]][:1] == [1]
    assert "Aletsch" in " ".join(c["text"] for c in preview["chunks"])
    report = api.post(f"/api/v1/kb-drafts/{draft_id}/validate", headers=auth).json()
    assert report["is_valid"] is True and report["errors"] == [] and report["estimated_duration_minutes"] > 0

    r = api.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=auth)
    assert r.status_code == 202
    kb_id, pipeline_id = r.json()["kb_id"], r.json()["pipeline_id"]
    state = wait_pipeline(api, auth, pipeline_id)
    assert state["status"] == "completed" and state["progress"] == 100
    assert state["counts"]["documents_total"] == 6 and state["counts"]["documents_failed"] == 0
    assert state["counts"]["chunks_indexed"] == state["counts"]["chunks_created"] > 0

    kb = api.get(f"/api/v1/kbs/{kb_id}", headers=auth).json()
    assert kb["status"] == "ready" and kb["counts"]["indexed"] == 6
    ids = _doc_ids(api, auth, kb_id)
    pdf_doc = api.get(f"/api/v1/documents/{ids['glaciers.pdf']}", headers=auth).json()
    assert pdf_doc["page_count"] == 2 and pdf_doc["status"] == "indexed"
    for question, expected in QUESTIONS.items():
        for mode in ("vector", "keyword", "hybrid"):
            r = api.post(
                f"/api/v1/kbs/{kb_id}/search",
                json={"query": question, "mode": mode, "top_k": 3},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            top = r.json()["results"][0]
            assert top["document_id"] == ids[expected], (mode, question, r.json()["results"])
    r = api.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "first crack", "mode": "hybrid"}, headers=auth)
    hit = r.json()["results"][0]
    assert (
        hit["filename"] == "coffee.docx"
        and hit["title"] == "Coffee roasting"
        and "First crack" in hit["section"]
    )
    fb = api.post(
        f"/api/v1/queries/{r.json()['query_id']}/feedback", json={"feedback": "positive"}, headers=auth
    )
    assert fb.status_code == 200


def test_search_filters_restrict_results_to_matching_documents(api: TestClient, auth: dict[str, str]) -> None:
    records = [
        {"external_id": "en", "title": "Rain", "text": "Rain falls from clouds.", "metadata": {"lang": "en"}},
        {
            "external_id": "de",
            "title": "Regen",
            "text": "Rain (Regen) falls from clouds.",
            "metadata": {"lang": "de"},
        },
    ]
    body = _finalized_kb(api, auth, [("files", ("bees.md", MARKDOWN, "text/markdown"))], records)
    wait_pipeline(api, auth, body["pipeline_id"])
    for filters, expected in (
        ({"lang": "de"}, {"de"}),
        ({"metadata.lang": ["en"]}, {"en"}),
        ({"external_id": "en"}, {"en"}),
    ):
        r = api.post(
            f"/api/v1/kbs/{body['kb_id']}/search",
            json={"query": "rain clouds", "filters": filters},
            headers=auth,
        )
        assert {x["external_id"] for x in r.json()["results"]} == expected
    for bad in (
        {"bad key!": 1},
        {"lang": [1.5, []]},  # a list or an object among the values (schemathesis found a 500)
        {"lang": {"nested": 1}},
        {"lang": [1, "en"]},  # mixed types
    ):
        r = api.post(
            f"/api/v1/kbs/{body['kb_id']}/search", json={"query": "rain", "filters": bad}, headers=auth
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", (bad, r.text)


def test_corrupt_pdf_fails_alone_and_the_kb_is_ready(api: TestClient, auth: dict[str, str]) -> None:
    corrupt = PDF[: len(PDF) // 3]  # a real PDF cut short
    files = [
        ("files", ("broken.pdf", corrupt, "application/pdf")),
        ("files", ("bees.md", MARKDOWN, "text/markdown")),
    ]
    body = _finalized_kb(api, auth, files, RECORDS[:1])
    state = wait_pipeline(api, auth, body["pipeline_id"])
    assert state["status"] == "completed_with_errors"
    assert state["counts"]["documents_failed"] == 1
    kb = api.get(f"/api/v1/kbs/{body['kb_id']}", headers=auth).json()
    assert kb["status"] == "ready" and kb["counts"]["indexed"] == 2 and kb["counts"]["failed"] == 1
    failed = api.get(f"/api/v1/kbs/{body['kb_id']}/documents?status=failed", headers=auth).json()["items"]
    assert [d["filename"] for d in failed] == ["broken.pdf"]
    assert failed[0]["error_kind"] == "permanent" and "PDF" in failed[0]["error"]
    jobs = api.get(f"/api/v1/jobs?kb_id={body['kb_id']}", headers=auth).json()["items"]
    assert jobs and all(j["attempts"] == 1 for j in jobs)  # permanent: never retried


def test_reposting_the_same_batch_embeds_nothing_and_a_changed_record_alone_is_reprocessed(
    api: TestClient, auth: dict[str, str]
) -> None:
    body = _finalized_kb(api, auth, [("files", ("bees.md", MARKDOWN, "text/markdown"))], [])
    wait_pipeline(api, auth, body["pipeline_id"])
    kb_id = body["kb_id"]
    batch = {"documents": [dict(r) for r in RECORDS]}
    first = api.post(f"/api/v1/kbs/{kb_id}/documents", json=batch, headers=auth)
    assert first.status_code == 202 and [d["status"] for d in first.json()["documents"]] == [
        "pending",
        "pending",
    ]
    s1 = wait_pipeline(api, auth, first.json()["pipeline_id"])
    chunks_before = api.get(f"/api/v1/kbs/{kb_id}", headers=auth).json()["counts"]["chunks"]
    assert s1["counts"]["chunks_embedded"] == 2

    again = api.post(f"/api/v1/kbs/{kb_id}/documents", json=batch, headers=auth)
    assert [d["status"] for d in again.json()["documents"]] == ["skipped", "skipped"]
    s2 = wait_pipeline(api, auth, again.json()["pipeline_id"])
    assert s2["status"] == "completed" and s2["counts"]["chunks_embedded"] == 0
    assert api.get(f"/api/v1/kbs/{kb_id}", headers=auth).json()["counts"]["chunks"] == chunks_before

    changed = {
        "documents": [
            dict(RECORDS[0]),
            {**RECORDS[1], "text": "Sourdough needs a starter fed with flour and water every day."},
        ]
    }
    third = api.post(f"/api/v1/kbs/{kb_id}/documents", json=changed, headers=auth)
    assert [d["status"] for d in third.json()["documents"]] == ["skipped", "pending"]
    s3 = wait_pipeline(api, auth, third.json()["pipeline_id"])
    assert s3["counts"]["documents_total"] == 1 and s3["counts"]["chunks_embedded"] == 1
    assert api.get(f"/api/v1/kbs/{kb_id}", headers=auth).json()["counts"]["chunks"] == chunks_before
    sourdough = third.json()["documents"][1]["id"]
    chunks = api.get(f"/api/v1/documents/{sourdough}/chunks", headers=auth).json()["items"]
    assert [c["text"] for c in chunks] == [changed["documents"][1]["text"]]
    r = api.post(
        f"/api/v1/kbs/{kb_id}/search",
        json={"query": "wild yeast lactobacilli", "mode": "keyword"},
        headers=auth,
    )
    assert all(
        x["document_id"] != sourdough for x in r.json()["results"]
    )  # the old text is gone from the index
