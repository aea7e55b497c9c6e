"""``lorebase workspace show|set`` with LOREBASE_SERVER_URL: through ``GET/PATCH /api/v1/workspace``
on the live server, as the key's workspace (another workspace than the shared KB's, whose jobs
the server's default workers must keep taking)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from lorebase.cli.main import app
from lorebase.settings import get_settings

from .conftest import Remote


def run(remote: Remote, key: str, local_dir: Path, *args: str) -> Result:
    env = {
        "LOREBASE_SERVER_URL": remote.url,
        "LOREBASE_API_KEY": key,
        "LOREBASE_DATA_DIR": str(local_dir),
        "COLUMNS": "200",
    }
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:
        get_settings.cache_clear()


def test_workspace_set_and_show_go_through_the_server(remote: Remote, tmp_path: Path) -> None:
    admin = remote.key_in("tiers-remote")
    got = run(remote, admin, tmp_path, "workspace", "set", "tiers-remote", "--priority", "7", "--pool", "big",
              "--retain-originals-days", "30", "--json")  # fmt: skip
    assert got.exit_code == 0, got.output
    ws = json.loads(got.output)
    assert (ws["priority"], ws["pool"], ws["retention"]["originals_days"]) == (7, "big", 30)
    shown = run(remote, admin, tmp_path, "workspace", "show", "tiers-remote", "--json")
    assert shown.exit_code == 0 and json.loads(shown.output) == ws
    back = run(remote, admin, tmp_path, "workspace", "set", "tiers-remote", "--pool", "none", "--json")
    assert back.exit_code == 0 and json.loads(back.output)["pool"] is None, back.output
    # another workspace's name, a bad pool, a key without admin: refused, nothing changed
    assert run(remote, admin, tmp_path, "workspace", "show", "default").exit_code == 1
    assert run(remote, admin, tmp_path, "workspace", "set", "tiers-remote", "--pool", "a b").exit_code != 0
    reader = remote.key_in("tiers-remote", scopes="read,write")
    denied = run(remote, reader, tmp_path, "workspace", "set", "tiers-remote", "--priority", "9")
    assert denied.exit_code == 1 and "needs 'admin'" in denied.output, denied.output
    assert (
        json.loads(run(remote, reader, tmp_path, "workspace", "show", "tiers-remote", "--json").output)[
            "priority"
        ]
        == 7
    )
    assert not (tmp_path / "lorebase.db").exists()  # the local data dir was never used
