"""Knowledge bases on the optional external stores (Qdrant in its local directory mode, Chroma's
persistent client), end to end through the API: ingest, hybrid search, delete."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from support.testexec import ON_BROKER

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
    {
        "external_id": "glacier",
        "title": "Glaciers",
        "text": "The Aletsch glacier in Switzerland is the largest glacier in the Alps.",
    },
]


@pytest.mark.parametrize(("store", "package"), [("qdrant", "qdrant_client"), ("chroma", "chromadb")])
def test_a_kb_on_an_external_store_ingests_searches_and_deletes(
    tmp_path: Path, store: str, package: str
) -> None:
    pytest.importorskip(package)
    if store == "qdrant" and ON_BROKER:
        pytest.skip("Qdrant's local directory is one process's; with workers it needs a server (not here)")
    settings = make_settings(tmp_path / "data", vector_store=store)
    with running_app(settings) as api:
        auth = key_headers(api)
        body = finalize_draft(api, auth, records=RECORDS, name=store)
        assert (
            api.get(f"/api/v1/kbs/{body['kb_id']}", headers=auth).json()["config"]["store"]["type"] == store
        )
        assert wait_pipeline(api, auth, body["pipeline_id"])["status"] == "completed"
        for mode in ("hybrid", "vector", "keyword"):
            r = api.post(
                f"/api/v1/kbs/{body['kb_id']}/search",
                json={"query": "how far is a lighthouse beam visible", "mode": mode, "top_k": 2},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["external_id"] == "lighthouse", (mode, r.json())
        runtime = api.app.state.runtime  # type: ignore[attr-defined]
        kb_store = runtime.store(store, 384)
        with runtime.db.read_session() as s:
            assert kb_store.count(s, body["kb_id"]) == 3
        assert api.delete(f"/api/v1/kbs/{body['kb_id']}", headers=auth).status_code == 204
        with runtime.db.read_session() as s:
            assert kb_store.count(s, body["kb_id"]) == 0


def test_a_draft_naming_a_store_that_is_not_installed_is_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "qdrant_client" else real(name, *a)
    )
    with running_app(make_settings(tmp_path / "data"), workers=0) as api:
        auth = key_headers(api)
        draft = api.post(
            "/api/v1/kb-drafts", json={"name": "q", "config": {"store": {"type": "qdrant"}}}, headers=auth
        ).json()
        api.post(
            f"/api/v1/kb-drafts/{draft['id']}/sources",
            json={"type": "text", "documents": RECORDS[:1]},
            headers=auth,
        )
        report = api.post(f"/api/v1/kb-drafts/{draft['id']}/validate", headers=auth).json()
        assert report["is_valid"] is False
        assert report["errors"][0]["field"] == "config.store.type"
        assert "lorebase[qdrant]" in report["errors"][0]["message"]
