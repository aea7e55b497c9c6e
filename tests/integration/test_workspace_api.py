"""``GET/PATCH /api/v1/workspace`` over the real app, and the Python client's calls against a
real server on loopback (as ``lorebase workspace show|set`` uses them with LOREBASE_SERVER_URL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import running_app
from lorebase.cli.main import app
from lorebase.services.auth import create_key
from lorebase.settings import Settings, get_settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with running_app(settings, workers=0) as c:
        yield c


def headers(client: TestClient, scopes: str) -> dict[str, str]:
    key, _ = create_key(client.app.state.runtime.db, workspace="acme", scopes=scopes)  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {key}"}


def test_an_admin_sets_the_tier_and_retention_a_reader_sees_them(client: TestClient) -> None:
    admin, reader = headers(client, "read,write,admin"), headers(client, "read")
    r = client.get("/api/v1/workspace", headers=reader)
    assert r.status_code == 200, r.text
    assert r.json() | {"id": None} == {
        "id": None,
        "name": "acme",
        "priority": 0,
        "pool": None,
        "retention": {"originals_days": None, "query_logs_days": None},
    }
    r = client.patch(
        "/api/v1/workspace",
        json={"priority": 20, "pool": "big", "retention": {"originals_days": 7}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["priority"], r.json()["pool"], r.json()["retention"]["originals_days"]) == (20, "big", 7)
    r = client.patch(
        "/api/v1/workspace", json={"pool": None, "retention": {"query_logs_days": 30}}, headers=admin
    )
    assert r.status_code == 200, r.text
    got = client.get("/api/v1/workspace", headers=reader).json()
    assert (got["priority"], got["pool"], got["retention"]) == (
        20,
        None,
        {"originals_days": 7, "query_logs_days": 30},
    )


@pytest.mark.parametrize(
    "body",
    [
        {"priority": 101},
        {"priority": "high"},
        {"pool": "has space"},
        {"pool": "x" * 41},
        {"retention": {"originals_days": -1}},
        {"retention": {"forever": 1}},
    ],
)
def test_a_bad_patch_is_refused_with_422(client: TestClient, body: dict[str, object]) -> None:
    r = client.patch("/api/v1/workspace", json=body, headers=headers(client, "read,write,admin"))
    assert r.status_code == 422, r.text


def test_only_an_admin_key_may_change_the_workspace(client: TestClient) -> None:
    r = client.patch("/api/v1/workspace", json={"priority": 5}, headers=headers(client, "read,write"))
    assert r.status_code == 403, r.text
    assert client.get("/api/v1/workspace", headers=headers(client, "read")).json()["priority"] == 0


def test_the_cli_sets_and_shows_a_workspace_on_the_local_data_dir(tmp_path: Path) -> None:
    env = {"LOREBASE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}

    def run(*args: str) -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    assert run("keys", "create", "--workspace", "acme").exit_code == 0
    got = run(
        "workspace", "set", "acme", "--priority", "-5", "--pool", "slow", "--retain-query-logs-days", "90"
    )
    assert got.exit_code == 0, got.output
    assert "priority -5" in got.output and "pool slow" in got.output
    shown = json.loads(run("workspace", "show", "acme", "--json").output)
    assert (shown["priority"], shown["pool"], shown["retention"]["query_logs_days"]) == (-5, "slow", 90)
    assert run("workspace", "set", "acme", "--priority", "500").exit_code == 1
    assert run("workspace", "set", "nobody", "--priority", "1").exit_code == 1
    assert run("workspace", "set", "acme").exit_code != 0  # nothing to change
    assert run("worker", "--pool", "not a pool").exit_code != 0
