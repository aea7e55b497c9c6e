"""Shared fixtures: real databases, the real embedding model, real workers.

The database is a SQLite file in each test's data dir, or, with
``LOREBASE_TEST_DATABASE=postgres``, a fresh database per data dir on a real PostgreSQL 16 +
pgvector started for the session (``support.testdb``). ``@pytest.mark.sqlite_only(reason)``
marks a test of SQLite itself; it is skipped, with its reason, on PostgreSQL. With
``LOREBASE_TEST_BLOB_STORE=s3`` every app, runtime and worker the fixtures build keeps its blobs
in S3: the session's moto_server, a key prefix per data dir (``support.testblobs``).

``settings`` uses short leases so that crash-recovery tests do not wait 30 s for a reaper.
``api`` is a FastAPI TestClient running the app's lifespan (so the embedded worker threads
run in-process); ``auth`` holds a real API key's header for it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the API process builds an fp32 ONNX file for its queries on the first search (~5 s of CPU in a
# thread): every test data dir would pay it, so tests keep queries on torch (the same vectors);
# tests/integration/test_onnx_queries.py turns it on (inherited by the servers tests start)
os.environ.setdefault("LOREBASE_ONNX_QUERIES", "false")

from lorebase.app import create_app
from lorebase.runtime import Runtime
from lorebase.services.auth import Principal, create_key, local_principal
from lorebase.settings import JobSettings, Settings
from support import testblobs, testdb, testexec, zygote

FINAL = ("completed", "completed_with_errors", "failed", "cancelled")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): tests SQLite itself; skipped when LOREBASE_TEST_DATABASE=postgres"
    )
    if testdb.TEST_DATABASE not in testdb.CHOICES:
        raise pytest.UsageError(
            f"LOREBASE_TEST_DATABASE={testdb.TEST_DATABASE!r}: use one of {', '.join(testdb.CHOICES)}"
        )
    if testblobs.TEST_BLOB_STORE not in testblobs.CHOICES:
        raise pytest.UsageError(
            f"LOREBASE_TEST_BLOB_STORE={testblobs.TEST_BLOB_STORE!r}: use s3 or leave it unset"
        )
    if testexec.TEST_EXECUTOR not in testexec.CHOICES:
        raise pytest.UsageError(
            f"LOREBASE_TEST_EXECUTOR={testexec.TEST_EXECUTOR!r}: use one of {', '.join(testexec.CHOICES)}"
        )
    config.addinivalue_line(
        "markers", "embedded_only(reason): tests the embedded executor itself; skipped on Celery/RQ runs"
    )
    if testdb.ON_POSTGRES and importlib.util.find_spec("pgserver") is None:  # not imported: it warns
        raise pytest.UsageError(
            "LOREBASE_TEST_DATABASE=postgres needs pgserver (pip install -e '.[postgres]')"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if testexec.ON_BROKER:
        for item in items:
            marker = item.get_closest_marker("embedded_only")
            if marker is not None:
                reason = marker.args[0] if marker.args else "tests the embedded executor"
                item.add_marker(pytest.mark.skip(reason=f"embedded executor only: {reason}"))
    if not testdb.ON_POSTGRES:
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "tests SQLite itself")
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    testdb.end_session()  # stops the PostgreSQL server, if this run started one, and deletes it
    zygote.close()  # the worker processes' warm parent, if this run started it
    testblobs.end_session()  # stops the moto server, if this run started one


@pytest.fixture(autouse=True)
def _test_databases() -> Iterator[None]:
    """On PostgreSQL, drop the databases a test made once it (and its fixtures) ended."""
    testdb.begin_test()
    yield
    testdb.end_test()


def make_settings(data_dir: Path, *, jobs: dict[str, Any] | None = None, **overrides: Any) -> Settings:
    """Test settings: short leases and backoff (``jobs`` overrides single job settings).

    With ``LOREBASE_TEST_DATABASE=postgres`` the data dir's own PostgreSQL database is set as
    ``database_url`` (the vector store then defaults to pgvector)."""
    if "database_url" not in overrides and (url := testdb.database_url_for(data_dir)):
        overrides["database_url"] = url
    for key, value in {**testexec.settings_for(data_dir), **testblobs.settings_for(data_dir)}.items():
        overrides.setdefault(key, value)
    job_settings = JobSettings(
        **{
            "lease_seconds": 4.0,
            "heartbeat_seconds": 1.0,
            "poll_seconds": 0.1,
            "reap_seconds": 0.5,
            "backoff_base_seconds": 0.2,
            "backoff_max_seconds": 2.0,
            "max_attempts": 3,
            **(jobs or {}),
        }
    )
    return Settings(data_dir=data_dir, jobs=job_settings, _env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def int8_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the built int8 model (``models/``), built once per test session (~15 s);
    copy its ``models`` folder into a test's data dir to skip the build there."""
    from lorebase.adapters.embedders.int8 import ensure_model

    root = tmp_path_factory.mktemp("int8-models")
    ensure_model(root, "all-MiniLM-L6-v2-int8")
    return root


@pytest.fixture(scope="session")
def infinity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a real OpenAI-compatible server, Infinity, serving the bundled
    all-MiniLM-L6-v2 as ``all-MiniLM-L6-v2`` (``support.infinity``: its venv is built once per
    machine, ~2 min; the server starts in ~10 s), for the session."""
    from support.infinity import InfinityServer

    server = InfinityServer(log=tmp_path_factory.mktemp("infinity") / "infinity.log")
    with server as base_url:
        yield base_url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def principal(runtime: Runtime) -> Principal:
    return local_principal(runtime.db, "default")


@contextmanager
def running_app(settings: Settings, workers: int = 2) -> Iterator[TestClient]:
    """The app with ``workers`` embedded worker threads, or, with ``LOREBASE_TEST_EXECUTOR=celery``
    or ``rq``, the app (dispatching) and one real worker process on the same database."""
    if not testexec.ON_BROKER or workers == 0:
        with TestClient(create_app(settings, workers=workers)) as client:
            yield client
        return
    from support.worker import start_worker, stop_worker

    with TestClient(create_app(settings, workers=0)) as client:
        worker = start_worker(
            settings.data_dir,
            concurrency=workers,
            LOREBASE_EMBED_BATCH_SIZE=str(settings.embed_batch_size),
        )
        try:
            yield client
        finally:
            stop_worker(worker)
            testexec.forget(settings.data_dir)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with running_app(settings, workers=2) as client:
        yield client


def key_headers(client: TestClient, workspace: str = "default") -> dict[str, str]:
    """A fresh API key of ``workspace`` on the app behind ``client``, as request headers."""
    key, _ = create_key(client.app.state.runtime.db, workspace=workspace)  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def auth(api: TestClient) -> dict[str, str]:
    return key_headers(api)


def wait_pipeline(
    client: TestClient, headers: dict[str, str], pipeline_id: str, timeout: float = 300
) -> dict[str, Any]:
    """Poll a pipeline as a client would until it reaches a final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/pipelines/{pipeline_id}", headers=headers)
        assert r.status_code == 200, r.text
        state = r.json()
        if state["status"] in FINAL:
            return state
        time.sleep(0.2)
    raise AssertionError(f"pipeline {pipeline_id} did not finish in {timeout}s: {state}")


def finalize_draft(
    client: TestClient,
    headers: dict[str, str],
    *,
    files: list[Any] | None = None,
    records: list[dict[str, Any]] | None = None,
    name: str = "kb",
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Draft → sources (multipart files, text records) → finalize, as a client would.

    Returns the 202 body with the draft's id added as ``draft_id``."""
    r = client.post("/api/v1/kb-drafts", json={"name": name, "config": config}, headers=headers)
    assert r.status_code == 201, r.text
    draft_id = r.json()["id"]
    if files:
        r = client.post(f"/api/v1/kb-drafts/{draft_id}/sources", files=files, headers=headers)
        assert r.status_code == 201, r.text
    if records:
        body = {"type": "text", "documents": records}
        r = client.post(f"/api/v1/kb-drafts/{draft_id}/sources", json=body, headers=headers)
        assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/kb-drafts/{draft_id}/finalize", headers=headers)
    assert r.status_code == 202, r.text
    return {**r.json(), "draft_id": draft_id}
