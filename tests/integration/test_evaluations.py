"""Evaluation as a feature: ``POST /kbs/{id}/evaluations`` runs as a job on a real app (SQLite,
the bundled model, embedded workers), answers 422 to what it cannot score and 404 across
workspaces, takes labels from the query log's feedback, and gives exactly the figures of
``lorebase eval`` on the same KB and labels (one code path: ``services/evaluations.score``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from conftest import finalize_draft, key_headers, wait_pipeline
from lorebase.cli.evaluate import run_eval
from lorebase.runtime import Runtime
from lorebase.services.auth import create_key, local_principal

RECORDS = [
    {
        "external_id": "bees",
        "title": "Honey bees",
        "text": "Honey bees communicate the direction of flowers with a waggle dance.",
    },
    {
        "external_id": "tides",
        "title": "Tides",
        "text": "The gravitational pull of the moon raises the ocean tides twice a day.",
    },
    {
        "external_id": "volcano",
        "title": "Volcanoes",
        "text": "Magma rises through the crust and erupts from a volcano as lava.",
    },
    {
        "external_id": "bread",
        "title": "Sourdough",
        "text": "Sourdough bread is leavened by wild yeast and lactic acid bacteria.",
    },
    {
        "external_id": "chess",
        "title": "Chess openings",
        "text": "The Sicilian Defence is a chess opening that answers 1.e4 with c5.",
    },
    {
        "external_id": "comets",
        "title": "Comets",
        "text": "A comet's tail of gas and dust always points away from the sun.",
    },
]
EASY = {
    "queries": [
        {"id": "q1", "text": "how do bees tell each other where flowers are"},
        {"id": "q2", "text": "why does the ocean have tides"},
    ],
    "qrels": {"q1": {"bees": 1}, "q2": {"tides": 1}},
}


def _kb(api: TestClient, auth: dict[str, str]) -> str:
    done = finalize_draft(api, auth, records=RECORDS, name="facts")
    assert wait_pipeline(api, auth, done["pipeline_id"])["status"] == "completed"
    return str(done["kb_id"])


def _finished(
    api: TestClient, auth: dict[str, str], evaluation_id: str, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get(f"/api/v1/evaluations/{evaluation_id}", headers=auth)
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("completed", "failed"):
            return dict(r.json())
        time.sleep(0.2)
    raise AssertionError(f"evaluation {evaluation_id} did not finish in {timeout}s")


def _evaluate(api: TestClient, auth: dict[str, str], kb_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = api.post(f"/api/v1/kbs/{kb_id}/evaluations", json=body, headers=auth)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    return _finished(api, auth, r.json()["evaluation_id"])


def test_easy_queries_score_one_in_every_mode_asked_and_are_not_logged(
    api: TestClient, auth: dict[str, str]
) -> None:
    kb_id = _kb(api, auth)
    version = api.get(f"/api/v1/kbs/{kb_id}", headers=auth).json().get("version", 1)
    done = _evaluate(api, auth, kb_id, {**EASY, "modes": ["hybrid", "vector"]})
    assert done["status"] == "completed", done
    assert done["kb_id"] == kb_id and done["queries"] == 2 and done["skipped_queries"] == 0
    assert done["versions"] == [version] and done["error"] is None and done["finished_at"]
    assert set(done["results"]) == {str(version)}
    for mode in ("hybrid", "vector"):
        figures = done["results"][str(version)][mode]
        assert figures == {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    assert [(q["id"], q["ndcg@10"]) for q in done["per_query"]] == [
        ("q1", {str(version): {"hybrid": 1.0, "vector": 1.0}}),
        ("q2", {str(version): {"hybrid": 1.0, "vector": 1.0}}),
    ]
    # evaluation queries stay out of the query log
    assert api.get(f"/api/v1/kbs/{kb_id}/queries", headers=auth).json()["total"] == 0

    # what cannot be scored answers 422, with details
    url = f"/api/v1/kbs/{kb_id}/evaluations"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"queries": [], "qrels": {"q1": {"bees": 1}}}, "queries"),
        ({**EASY, "qrels": {**EASY["qrels"], "q9": {"bees": 1}}}, "q9"),
        ({**EASY, "modes": ["hybrid", "semantic"]}, "semantic"),
        ({**EASY, "versions": [version + 6]}, "no version"),
        ({"queries": [{"id": "q1", "text": "bees"}], "qrels": {"q1": {"bees": 0}}}, "relevant"),
        (
            {
                "queries": [{"id": f"q{i}", "text": "bees"} for i in range(10_001)],
                "qrels": {"q1": {"bees": 1}},
            },
            "10000",
        ),
        ({"from_feedback": True}, "no feedback"),
        ({**EASY, "from_feedback": True}, "not both"),
    ]
    for body, expected in bad:
        r = api.post(url, json=body, headers=auth)
        assert r.status_code == 422, (body.keys(), r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_input"
        assert expected in error["message"] + json.dumps(error["details"]), r.text
    assert (
        api.post(f"/api/v1/kbs/{kb_id}/evaluations", json={**EASY, "top_k": 3}, headers=auth).status_code
        == 422
    )

    # workspace walls: another workspace sees neither the KB nor the evaluation
    other = key_headers(api, "other")
    assert api.post(url, json=EASY, headers=other).status_code == 404
    r = api.get(f"/api/v1/evaluations/{done['id']}", headers=other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # scopes: read may read, not create
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    reader, _ = create_key(runtime.db, workspace="default", scopes="read")
    read_only = {"Authorization": f"Bearer {reader}"}
    assert api.get(f"/api/v1/evaluations/{done['id']}", headers=read_only).status_code == 200
    assert api.post(url, json=EASY, headers=read_only).status_code == 403


def test_labels_from_feedback_liked_documents_are_relevant_disliked_queries_are_left_out(
    api: TestClient, auth: dict[str, str]
) -> None:
    kb_id = _kb(api, auth)
    searched = {}
    for text in ("volcano lava eruption", "sourdough yeast", "chess opening"):
        r = api.post(f"/api/v1/kbs/{kb_id}/search", json={"query": text, "top_k": 2}, headers=auth)
        assert r.status_code == 200, r.text
        searched[text] = r.json()
    for text, value in (("volcano lava eruption", "positive"), ("sourdough yeast", "negative")):
        query_id = searched[text]["query_id"]
        r = api.post(f"/api/v1/queries/{query_id}/feedback", json={"feedback": value}, headers=auth)
        assert r.status_code == 200, r.text

    done = _evaluate(api, auth, kb_id, {"from_feedback": True, "modes": ["hybrid", "keyword"]})
    assert done["status"] == "completed", done
    assert done["from_feedback"] is True
    # the liked search is one scored query; the disliked one has no relevant document: left out;
    # the unrated one says nothing
    assert done["queries"] == 1 and done["skipped_queries"] == 1
    assert done["feedback"]["positive"] == 1 and done["feedback"]["negative"] == 1
    assert [q["id"] for q in done["per_query"]] == [searched["volcano lava eruption"]["query_id"]]
    # the same search ranks the liked documents (its own top 2) first again
    version = str(done["versions"][0])
    assert done["results"][version]["hybrid"]["ndcg@10"] == 1.0
    assert done["results"][version]["hybrid"]["recall@10"] == 1.0


def test_lorebase_eval_and_the_api_give_identical_figures(
    api: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    kb_id = _kb(api, auth)
    queries = [
        {"_id": "q1", "text": "insects dancing"},
        {"_id": "q2", "text": "things in the sky"},
        {"_id": "q3", "text": "food made with bacteria"},
        {"_id": "q4", "text": "not judged at all"},
    ]
    qrels = [
        ("q1", "bees", 1),
        ("q2", "comets", 2),
        ("q2", "tides", 1),
        ("q3", "bread", 1),
        ("q3", "chess", 0),
    ]
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels)
    )
    modes = ["vector", "keyword", "hybrid"]
    runtime: Runtime = api.app.state.runtime  # type: ignore[attr-defined]
    report = run_eval(
        runtime,
        local_principal(runtime.db, "default"),
        kb=kb_id,
        queries=str(tmp_path / "queries.jsonl"),
        qrels=str(tmp_path / "qrels.tsv"),
        corpus=None,
        modes=modes,
        limit=None,
    )
    body = {
        "queries": [{"id": q["_id"], "text": q["text"]} for q in queries],
        "qrels": {q: {d: g for qq, d, g in qrels if qq == q} for q in ("q1", "q2", "q3")},
        "modes": modes,
    }
    done = _evaluate(api, auth, kb_id, body)
    assert done["status"] == "completed", done
    assert report["queries"] == done["queries"] == 3  # q4 has no judgements
    (figures,) = done["results"].values()
    for mode in modes:
        assert {k: v for k, v in report["modes"][mode].items() if k != "ms_per_query"} == figures[mode]
    assert any(figures[m]["ndcg@10"] < 1.0 for m in modes)  # not trivially perfect
