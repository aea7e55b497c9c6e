"""KBs on ``openai:<model>`` against a real OpenAI-compatible server: Infinity serving the
bundled all-MiniLM-L6-v2 (``infinity`` in conftest), through the API of a real server on
loopback (``support.live``), with a recording proxy (``support.openai_proxy``) in front where a
test needs the endpoint to answer 429, 401 or vectors of another size.

The shared rate limit across worker processes is pinned in ``test_openai_rate_limit.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import finalize_draft, make_settings, wait_pipeline
from lorebase.services.auth import create_key
from support.live import live_server
from support.openai_proxy import OpenAIProxy

MODEL = "openai:all-MiniLM-L6-v2"
RECORDS = [
    {"external_id": "bees", "title": "Bees", "text": "Honey bees dance to tell the hive where flowers are."},
    {"external_id": "rain", "title": "Rain", "text": "Monsoon rain floods the river delta every summer."},
    {"external_id": "tax", "title": "Tax", "text": "Quarterly revenue grew twelve percent on cloud sales."},
]


@pytest.fixture
def proxy(infinity: str) -> Iterator[OpenAIProxy]:
    p = OpenAIProxy(infinity)
    with p:
        yield p


def _server(tmp_path: Path, base_url: str | None, **overrides: Any) -> Any:
    settings = make_settings(
        tmp_path / "data",
        openai_base_url=base_url,
        openai_api_key="sk-test-0123456789",
        openai_max_tokens=256,
        jobs={"backoff_max_seconds": 5.0},
        **overrides,
    )
    return live_server(settings)


def _auth(live: Any) -> dict[str, str]:
    key, _ = create_key(live.app.state.runtime.db, workspace="default")
    return {"Authorization": f"Bearer {key}"}


def _client(live: Any) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=60)


def test_a_kb_on_an_openai_model_ingests_and_searches_end_to_end(tmp_path: Path, infinity: str) -> None:
    with _server(tmp_path, infinity) as live, _client(live) as api:
        auth = _auth(live)
        body = finalize_draft(api, auth, records=RECORDS, config={"embedding": {"model": MODEL}})  # type: ignore[arg-type]
        state = wait_pipeline(api, auth, body["pipeline_id"], timeout=60)  # type: ignore[arg-type]
        assert state["status"] == "completed", state
        kb = api.get(f"/api/v1/kbs/{body['kb_id']}", headers=auth).json()
        # the dimension was learnt by the validation's probe and recorded; no key in the config
        assert kb["config"]["embedding"] == {"model": MODEL, "dimensions": 384}
        assert "sk-test" not in str(kb)
        hits = api.post(
            f"/api/v1/kbs/{body['kb_id']}/search",
            json={"query": "where do bees find flowers", "top_k": 2},
            headers=auth,
        ).json()["results"]
        assert hits[0]["external_id"] == "bees", hits


def test_a_draft_on_an_openai_model_without_an_endpoint_is_invalid_and_says_so(tmp_path: Path) -> None:
    with _server(tmp_path, None) as live, _client(live) as api:
        auth = _auth(live)
        r = api.post(
            "/api/v1/kb-drafts", json={"name": "x", "config": {"embedding": {"model": MODEL}}}, headers=auth
        )
        draft = r.json()["id"]
        api.post(
            f"/api/v1/kb-drafts/{draft}/sources",
            json={"type": "text", "documents": RECORDS[:1]},
            headers=auth,
        )
        report = api.post(f"/api/v1/kb-drafts/{draft}/validate", headers=auth).json()
        assert not report["is_valid"]
        [error] = [e for e in report["errors"] if e["field"].startswith("config.embedding")]
        assert error["field"] == "config.embedding.base_url"
        assert (
            "LOREBASE_OPENAI_BASE_URL" in error["message"] and "config.embedding.base_url" in error["message"]
        )
        r = api.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=auth)
        assert r.status_code == 422 and "LOREBASE_OPENAI_BASE_URL" in r.text
        # an endpoint of the writer's choosing (here the cloud metadata address) is refused
        hostile = {"embedding": {"model": MODEL, "base_url": "http://169.254.169.254/v1"}}
        r = api.patch(f"/api/v1/kb-drafts/{draft}", json={"config": hostile}, headers=auth)
        assert r.status_code == 200, r.text
        report = api.post(f"/api/v1/kb-drafts/{draft}/validate", headers=auth).json()
        [error] = [e for e in report["errors"] if e["field"].startswith("config.embedding")]
        assert error["field"] == "config.embedding.base_url"
        assert "LOREBASE_OPENAI_ALLOWED_BASE_URLS" in error["message"], error
        r = api.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=auth)
        assert r.status_code == 422 and "LOREBASE_OPENAI_ALLOWED_BASE_URLS" in r.text


def test_a_429_is_retried_after_its_retry_after_and_the_document_ends_indexed(
    tmp_path: Path, proxy: OpenAIProxy
) -> None:
    with _server(tmp_path, proxy.base_url) as live, _client(live) as api:
        auth = _auth(live)
        proxy.fail(429, "Rate limit reached for requests", retry_after="2")
        # the dimension stated: no probe at validation, the first request is the embedding's
        config = {"embedding": {"model": MODEL, "dimensions": 384}}
        body = finalize_draft(api, auth, records=RECORDS[:1], config=config)  # type: ignore[arg-type]
        state = wait_pipeline(api, auth, body["pipeline_id"], timeout=60)  # type: ignore[arg-type]
        assert state["status"] == "completed", state
    first, second = proxy.arrivals[:2]
    assert (first.answered, second.answered) == (429, 200)
    print(f"429 at {first.at:.3f}, retried {second.at - first.at:.3f} s later (Retry-After: 2)")
    assert second.at - first.at >= 2.0


def test_a_401_fails_the_document_permanently_with_the_provider_s_message(
    tmp_path: Path, proxy: OpenAIProxy
) -> None:
    proxy.fail_always(401, "Incorrect API key provided: sk-test-***6789.")
    with _server(tmp_path, proxy.base_url) as live, _client(live) as api:
        auth = _auth(live)
        config = {"embedding": {"model": MODEL, "dimensions": 384}}
        body = finalize_draft(api, auth, records=RECORDS[:1], config=config)  # type: ignore[arg-type]
        state = wait_pipeline(api, auth, body["pipeline_id"], timeout=60)  # type: ignore[arg-type]
        assert state["status"] in ("failed", "completed_with_errors"), state
        [doc] = api.get(f"/api/v1/kbs/{body['kb_id']}/documents?status=failed", headers=auth).json()["items"]
    assert doc["error_kind"] == "permanent"
    assert "401" in doc["error"] and "Incorrect API key provided" in doc["error"], doc["error"]
    assert "Traceback" not in doc["error"]
    assert len(proxy.arrivals) == 1  # permanent: never retried
