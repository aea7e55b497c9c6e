"""``GET/PATCH /api/v1/workspace`` over the real app, and the Python client's calls against a
real server on loopback (as ``lorebase workspace show|set`` uses them with LOREBASE_SERVER_URL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from conftest import running_app
from lorebase.services.auth import create_key
from lorebase.settings import Settings


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
