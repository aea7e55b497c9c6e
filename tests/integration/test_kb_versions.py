"""Changing a live KB's config: version N+1 builds beside N and swaps in one transaction.

Runs on SQLite and, in ``make test-postgres``, on PostgreSQL + pgvector. A searcher keeps asking
while each re-index runs, and every answer is checked against the chunks of the version it says
served it: never empty, never a mix of N and N+1.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from conftest import FINAL, key_headers, make_settings, running_app, wait_pipeline
from lorebase.assembly import build_executor
from lorebase.db.models import Chunk, EmbeddingCache, KbVersion, Pipeline
from lorebase.metrics import REGISTRY
from lorebase.runtime import Runtime
from lorebase.services import versions
from lorebase.services.auth import local_principal
from lorebase.services.settle import settle
from support.faults import records, start_pipeline
from support.worker import start_worker

#: ~280 tokens each: two chunks at chunk size 200, three at 120
DOCS = records(12, words=220)
QUERY = DOCS[3]["title"]
NEW_DOC = {
    "external_id": "added-during-build",
    "title": "Basalt columns",
    "text": "Basalt columns form when thick lava flows cool and contract into hexagonal prisms. " * 4,
}


def _chunk_ids(client: TestClient, kb_id: str) -> dict[int, set[str]]:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.db.read_session() as s:
        rows = s.execute(select(Chunk.version, Chunk.id).where(Chunk.kb_id == kb_id)).all()
    out: dict[int, set[str]] = {}
    for version, chunk_id in rows:
        out.setdefault(version, set()).add(chunk_id)
    return out


class Searcher:
    """Searches between polls, and checks every answer against the version that served it."""

    def __init__(self, client: TestClient, headers: dict[str, str], kb_id: str) -> None:
        self.client, self.headers, self.kb_id = client, headers, kb_id
        self.answers: list[tuple[int, list[str]]] = []
        #: chunk ids by version, as seen at each build's end (retention deletes old versions)
        self.known: dict[int, set[str]] = {}

    def _remember(self) -> None:
        for version, ids in _chunk_ids(self.client, self.kb_id).items():
            self.known.setdefault(version, set()).update(ids)

    def search(self, query: str = QUERY, **body: Any) -> dict[str, Any]:
        r = self.client.post(
            f"/api/v1/kbs/{self.kb_id}/search",
            json={"query": query, "top_k": 10, **body},
            headers=self.headers,
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["results"], "a search during a re-index must never be empty"
        self.answers.append((answer["version"], [x["chunk_id"] for x in answer["results"]]))
        return answer

    def until_done(self, pipeline_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.search()
            r = self.client.get(f"/api/v1/pipelines/{pipeline_id}", headers=self.headers)
            if r.json()["status"] in FINAL:
                self._remember()
                return dict(r.json())
            time.sleep(0.05)
        raise AssertionError(f"re-index {pipeline_id} did not finish")

    def check(self) -> set[int]:
        """Every answer came from exactly one version; returns the versions seen."""
        self._remember()
        for version, ids in self.answers:
            assert set(ids) <= self.known.get(version, set()), f"an answer mixed versions (said {version})"
        return {v for v, _ in self.answers}


def _versions(client: TestClient, headers: dict[str, str], kb_id: str) -> dict[int, dict[str, Any]]:
    r = client.get(f"/api/v1/kbs/{kb_id}/versions", headers=headers)
    assert r.status_code == 200, r.text
    return {v["version"]: v for v in r.json()["items"]}


def _reindex(
    client: TestClient, headers: dict[str, str], kb_id: str, config: dict[str, Any], **body: Any
) -> Any:
    r = client.patch(f"/api/v1/kbs/{kb_id}", json={"config": config, **body}, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def test_reindex_swaps_atomically_keeps_new_documents_and_rolls_back(
    tmp_path: Path, int8_models: Path
) -> None:
    settings = make_settings(tmp_path / "data", embed_batch_size=8)
    shutil.copytree(int8_models / "models", settings.data_dir / "models")  # int8 built once per session
    with running_app(settings) as client:
        h = key_headers(client)
        r = client.post("/api/v1/kb-drafts", json={"name": "versions"}, headers=h)
        draft = r.json()["id"]
        client.post(f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": DOCS}, headers=h)
        fin = client.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=h).json()
        assert wait_pipeline(client, h, fin["pipeline_id"])["status"] == "completed"
        kb_id = fin["kb_id"]
        v1 = _versions(client, h, kb_id)
        assert list(v1) == [1] and v1[1]["status"] == "live" and v1[1]["counts"]["chunks"] >= 24
        searcher = Searcher(client, h, kb_id)

        # chunk size 200 -> 120, with a document added while version 2 builds
        started = _reindex(client, h, kb_id, {"chunking": {"chunk_size": 120, "chunk_overlap": 10}})
        assert started["version"] == 2
        r = client.post(f"/api/v1/kbs/{kb_id}/documents", json={"documents": [NEW_DOC]}, headers=h)
        assert r.status_code == 202, r.text
        added = r.json()["pipeline_id"]
        done = searcher.until_done(started["pipeline_id"])
        assert done["status"] == "completed", done
        assert wait_pipeline(client, h, added)["status"] == "completed"
        states = _versions(client, h, kb_id)
        assert {v: x["status"] for v, x in states.items()} == {1: "retired", 2: "live"}
        assert states[2]["counts"]["chunks"] > states[1]["counts"]["chunks"]  # smaller chunks, more of them
        assert searcher.search()["version"] == 2
        found = searcher.search("hexagonal basalt columns from cooling lava")
        assert found["results"][0]["external_id"] == "added-during-build"
        old = searcher.search("hexagonal basalt columns from cooling lava", version=1)
        assert old["version"] == 1 and old["results"][0]["external_id"] == "added-during-build"

        # another runtime: the int8 model (another model id: every text is embedded again)
        third = _reindex(client, h, kb_id, {"embedding": {"model": "local:all-MiniLM-L6-v2-int8"}})
        assert third["version"] == 3
        assert searcher.until_done(third["pipeline_id"])["status"] == "completed"
        states = _versions(client, h, kb_id)
        # retention keeps one retired version: version 1 is gone with its chunks and vectors
        assert {v: x["status"] for v, x in states.items()} == {2: "retired", 3: "live"}
        assert searcher.search()["version"] == 3  # the polls may all have come before the swap
        assert 1 not in _chunk_ids(client, kb_id)
        r = client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": QUERY, "version": 1}, headers=h)
        assert r.status_code == 404, r.text
        assert (
            client.get(f"/api/v1/kbs/{kb_id}", headers=h)
            .json()["config"]["embedding"]["model"]
            .endswith("int8")
        )

        # rollback to version 2
        r = client.post(f"/api/v1/kbs/{kb_id}/versions/2/activate", headers=h)
        assert r.status_code == 200 and r.json()["status"] == "live", r.text
        assert searcher.search()["version"] == 2
        kb = client.get(f"/api/v1/kbs/{kb_id}", headers=h).json()
        assert kb["version"] == 2 and kb["config"]["chunking"]["chunk_size"] == 120
        assert {v: x["status"] for v, x in _versions(client, h, kb_id).items()} == {2: "live", 3: "retired"}
        assert searcher.check() == {1, 2, 3}


def test_paused_resumed_then_cancelled_reindex_leaves_the_live_version_and_serves_nothing_of_the_new_one(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data", embed_batch_size=2)
    with running_app(settings) as client:
        h = key_headers(client)
        r = client.post("/api/v1/kb-drafts", json={"name": "cancel"}, headers=h)
        draft = r.json()["id"]
        client.post(f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": DOCS}, headers=h)
        fin = client.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=h).json()
        assert wait_pipeline(client, h, fin["pipeline_id"])["status"] == "completed"
        kb_id = fin["kb_id"]
        searcher = Searcher(client, h, kb_id)
        started = _reindex(client, h, kb_id, {"chunking": {"chunk_size": 120, "chunk_overlap": 10}})
        # pause and resume work as for any pipeline; the live version answers meanwhile
        r = client.post(f"/api/v1/pipelines/{started['pipeline_id']}/pause", headers=h)
        assert r.status_code in (200, 202), r.text
        time.sleep(1.0)
        paused = client.get(f"/api/v1/pipelines/{started['pipeline_id']}", headers=h).json()
        assert paused["status"] == "paused", paused
        assert searcher.search()["version"] == 1
        time.sleep(0.5)
        still = client.get(f"/api/v1/pipelines/{started['pipeline_id']}", headers=h).json()
        assert still["counts"] == paused["counts"]  # nothing moves while paused
        r = client.post(f"/api/v1/pipelines/{started['pipeline_id']}/resume", headers=h)
        assert r.status_code in (200, 202), r.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # halfway: some of version 2 embedded, not all
            searcher.search()
            p = client.get(f"/api/v1/pipelines/{started['pipeline_id']}", headers=h).json()
            if p["counts"]["chunks_indexed"] >= 4:
                break
            time.sleep(0.05)
        r = client.post(f"/api/v1/pipelines/{started['pipeline_id']}/cancel", headers=h)
        assert r.status_code in (200, 202), r.text
        end = searcher.until_done(started["pipeline_id"])
        assert end["status"] == "cancelled", end
        assert end["counts"]["chunks_indexed"] >= 4  # it was cancelled with part of version 2 built
        states = _versions(client, h, kb_id)
        assert {v: x["status"] for v, x in states.items()} == {1: "live", 2: "cancelled"}
        assert states[2]["counts"]["chunks"] == 0 and 2 not in _chunk_ids(client, kb_id)
        assert searcher.check() == {1}
        r = client.post(f"/api/v1/kbs/{kb_id}/search", json={"query": QUERY, "version": 2}, headers=h)
        assert r.status_code == 409, r.text
        r = client.post(f"/api/v1/kbs/{kb_id}/versions/2/activate", headers=h)
        assert r.status_code == 409, r.text
        # a new change may start: the cancelled one holds nothing
        again = _reindex(client, h, kb_id, {"chunking": {"chunk_size": 120, "chunk_overlap": 10}})
        assert again["version"] == 3
        assert searcher.until_done(again["pipeline_id"])["status"] == "completed"
        assert searcher.search()["version"] == 3


def test_bad_config_changes_are_refused_and_change_nothing(api: TestClient, auth: dict[str, str]) -> None:
    r = api.post("/api/v1/kb-drafts", json={"name": "refuse"}, headers=auth)
    draft = r.json()["id"]
    api.post(f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": DOCS[:2]}, headers=auth)
    fin = api.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=auth).json()
    assert wait_pipeline(api, auth, fin["pipeline_id"])["status"] == "completed"
    kb_id = fin["kb_id"]
    for body, status in (
        ({"config": {"chunking": {"chunk_size": 5000}}}, 422),  # over the model's 256 tokens
        ({"config": {"embedding": {"model": "local:nope"}}}, 422),
        ({"config": {"chunking": {"bogus": 1}}}, 422),
        ({"config": {"chunking": {"chunk_size": 100}}, "activate": "if_better"}, 422),  # no evaluation
        ({"config": {"chunking": {"chunk_size": 100}}, "activate": "sometimes"}, 422),
    ):
        r = api.patch(f"/api/v1/kbs/{kb_id}", json=body, headers=auth)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["message"]
    assert list(_versions(api, auth, kb_id)) == [1]
    # a name change is not a version
    r = api.patch(f"/api/v1/kbs/{kb_id}", json={"name": "renamed", "description": "d"}, headers=auth)
    assert r.status_code == 200 and r.json()["name"] == "renamed", r.text
    # Idempotency-Key: a retried PATCH replays its answer; an unknown KB is 404, not a server error
    keyed = {**auth, "Idempotency-Key": "rename-1"}
    first = api.patch(f"/api/v1/kbs/{kb_id}", json={"name": "again"}, headers=keyed)
    again = api.patch(f"/api/v1/kbs/{kb_id}", json={"name": "again"}, headers=keyed)
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == first.json()
    assert (
        api.patch("/api/v1/kbs/0", json={"name": "x"}, headers=keyed | {"Idempotency-Key": "k"}).status_code
        == 404
    )
    # one build at a time
    first = _reindex(
        api, auth, kb_id, {"chunking": {"chunk_size": 100, "chunk_overlap": 10}}, activate="manual"
    )
    r = api.patch(f"/api/v1/kbs/{kb_id}", json={"config": {"chunking": {"chunk_size": 90}}}, headers=auth)
    assert r.status_code in (202, 409), r.text  # 202 only if the first already ended
    assert wait_pipeline(api, auth, first["pipeline_id"])["status"] == "completed"
    states = _versions(api, auth, kb_id)
    assert states[1]["status"] == "live" and states[2]["status"] == "complete"  # manual: not activated
    # another workspace sees none of it
    other = key_headers(api, workspace="other")
    assert api.get(f"/api/v1/kbs/{kb_id}/versions", headers=other).status_code == 404
    assert api.post(f"/api/v1/kbs/{kb_id}/versions/2/activate", headers=other).status_code == 404
    assert api.patch(f"/api/v1/kbs/{kb_id}", json={"name": "x"}, headers=other).status_code == 404
    # a version number beyond any column's range is a 422, not a database error
    huge = 135831226936087117824
    assert api.post(f"/api/v1/kbs/{kb_id}/versions/{huge}/activate", headers=auth).status_code == 422
    assert api.get(f"/api/v1/kbs/{kb_id}/versions/{huge}", headers=auth).status_code == 422
    r = api.post(f"/api/v1/kbs/{kb_id}/versions/2/activate", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "live"


def _texts_sent(model_id: str) -> float:
    return (
        REGISTRY.get_sample_value("lorebase_embedder_texts_total", {"model": model_id, "slot": "ingest"})
        or 0.0
    )


def test_sigkilled_worker_mid_reindex_resumes_without_embedding_any_text_twice(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rt = Runtime(make_settings(data_dir, embed_batch_size=4))
    try:
        kb_id, pid = start_pipeline(rt, DOCS, name="crash")
        build_executor(rt, concurrency=1).run_until_idle()
        settle(rt, pid)
        with rt.db.read_session() as s:
            v1_texts = set(s.execute(select(Chunk.embed_text).where(Chunk.kb_id == kb_id)).scalars())
            cached_before = s.execute(select(func.count()).select_from(EmbeddingCache)).scalar_one()
        p = local_principal(rt.db)
        status, started = versions.update_kb(
            rt, p, kb_id, config={"chunking": {"chunk_size": 120, "chunk_overlap": 10}}
        )
        assert status == 202
        reindex = started["pipeline_id"]
        worker = start_worker(
            data_dir, concurrency=1, LOREBASE_EMBED_BATCH_SIZE="4", LOREBASE_FAULTS="embed.after_batch=kill@2"
        )
        assert worker.wait(180) == -signal.SIGKILL  # died at its second embedded batch
        with rt.db.read_session() as s:
            before = s.execute(select(Pipeline).where(Pipeline.id == reindex)).scalar_one()
            committed, state = before.chunks_embedded, before.status
        assert state == "running" and committed > 0

        model = rt.kb_embedder({"embedding": {"model": rt.settings.embedder}}).model_id
        sent_before = _texts_sent(model)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the dead worker's lease expires, the reaper hands the job back
            rt.queue.reap()
            build_executor(rt, concurrency=1).run_until_idle()
            settle(rt, reindex)
            with rt.db.read_session() as s:
                end = s.execute(select(Pipeline).where(Pipeline.id == reindex)).scalar_one()
            if end.status in FINAL:
                break
            time.sleep(0.5)
        assert end.status == "completed", end.message
        sent_after = _texts_sent(model) - sent_before
        with rt.db.read_session() as s:
            v2_texts = set(
                s.execute(select(Chunk.embed_text).where(Chunk.kb_id == kb_id, Chunk.version == 2)).scalars()
            )
            cached_after = s.execute(select(func.count()).select_from(EmbeddingCache)).scalar_one()
            live = s.execute(
                select(KbVersion.version).where(KbVersion.kb_id == kb_id, KbVersion.status == "live")
            ).scalar_one()
        new_texts = len(v2_texts - v1_texts)
        assert live == 2
        # the texts the model saw: those embedded before the kill (committed with their batches),
        # then the rest once, by the resumed run: each new text exactly once
        assert committed + sent_after == new_texts, (committed, sent_after, new_texts)
        assert end.chunks_embedded == new_texts and cached_after - cached_before == new_texts
    finally:
        rt.close()


#: each relevant document has a passage per query term (the term three times in it); its
#: distractor, a short note, names three of the terms together. A whole-document chunk holds every
#: term and ranks first; 40-token chunks hold one term each, and the distractor's three then win
#: (with two, the 40-token version's figure came within numeric noise of the whole documents').
_TERMS = {
    "q1": ["copper", "zinc", "tin", "bronze", "alloy"],
    "q2": ["glacier", "moraine", "crevasse", "ablation", "firn"],
    "q3": ["enzyme", "substrate", "catalysis", "inhibitor", "kinetics"],
}


def _spread(terms: list[str]) -> str:
    return " ".join(
        f"The next section is about {t}. We describe {t} in some detail here, with the common "
        f"observations and measurements that field workers report about {t} over many seasons."
        for t in terms
    )


def test_if_better_refuses_a_worse_config_and_accepts_one_that_is_not_worse(
    api: TestClient, auth: dict[str, str]
) -> None:
    records = []
    for q, terms in _TERMS.items():
        records.append({"external_id": f"{q}-relevant", "title": "Field notes", "text": _spread(terms)})
        records.append(
            {
                "external_id": f"{q}-distractor",
                "title": "Note",
                "text": f"A note on {terms[0]}, {terms[1]} and {terms[2]} only.",
            }
        )
    r = api.post("/api/v1/kb-drafts", json={"name": "if-better"}, headers=auth)
    draft = r.json()["id"]
    api.post(f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": records}, headers=auth)
    fin = api.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=auth).json()
    assert wait_pipeline(api, auth, fin["pipeline_id"])["status"] == "completed"
    kb_id = fin["kb_id"]
    evaluation = {
        "queries": [{"id": q, "text": " ".join(terms)} for q, terms in _TERMS.items()],
        "qrels": {q: {f"{q}-relevant": 1} for q in _TERMS},
    }
    worse = _reindex(
        api,
        auth,
        kb_id,
        {"chunking": {"chunk_size": 40, "chunk_overlap": 0}},
        activate="if_better",
        evaluation=evaluation,
    )
    assert wait_pipeline(api, auth, worse["pipeline_id"])["status"] == "completed"
    states = _versions(api, auth, kb_id)
    assert states[1]["status"] == "live" and states[2]["status"] == "complete", (
        states[2]["message"],
        states[2]["evaluation"],
    )
    figures = states[2]["evaluation"]["results"]
    assert figures["2"]["hybrid"]["ndcg@10"] < figures["1"]["hybrid"]["ndcg@10"]
    assert "not activated" in states[2]["message"] and "below version 1" in states[2]["message"]
    assert (
        api.post(f"/api/v1/kbs/{kb_id}/search", json={"query": "copper"}, headers=auth).json()["version"] == 1
    )
    ev = api.get(f"/api/v1/evaluations/{states[2]['evaluation_id']}", headers=auth).json()
    assert ev["status"] == "completed" and set(ev["results"]) == {"1", "2"}

    better = _reindex(
        api,
        auth,
        kb_id,
        {"chunking": {"chunk_size": 200, "chunk_overlap": 10}},
        activate="if_better",
        evaluation=evaluation,
    )
    assert wait_pipeline(api, auth, better["pipeline_id"])["status"] == "completed"
    states = _versions(api, auth, kb_id)
    assert states[3]["status"] == "live" and states[1]["status"] == "retired", states[3]
    assert "and live: nDCG@10" in states[3]["message"]
    # the refused version stays complete (kept current by ingestion) and can still be activated by hand
    assert states[2]["status"] == "complete"
