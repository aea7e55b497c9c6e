"""Which database the suite's database-backed fixtures run on: ``LOREBASE_TEST_DATABASE``.

``sqlite`` (the default): each data dir holds its own SQLite file, as in the embedded mode.

``postgres``: one PostgreSQL 16 + pgvector server (``support.pg``) for the whole session, and
one fresh database per data dir, already migrated (``support.pg.migrated_database``):
``database_url_for(data_dir)`` makes it on first use and gives the same URL for the same data
dir afterwards (two runtimes on one data dir share one
database, as they would share one SQLite file). A database made during a test is dropped when
the test ends (``conftest``'s autouse ``_test_databases``); one made by a wider fixture lives
until the session ends, when the server is stopped and its temp dir deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

CHOICES = ("sqlite", "postgres")
TEST_DATABASE = os.environ.get("LOREBASE_TEST_DATABASE", "").strip().lower() or "sqlite"
ON_POSTGRES = TEST_DATABASE == "postgres"

_by_data_dir: dict[Path, str] = {}
_test_scope: list[str] | None = None  # databases made by the running test, dropped at its end


def database_url_for(data_dir: Path) -> str | None:
    """The database URL the app on ``data_dir`` uses; None on SQLite (the data dir's own file)."""
    if not ON_POSTGRES:
        return None
    from support.pg import migrated_database, shared_server_url

    key = Path(data_dir).resolve()
    if key not in _by_data_dir:
        url = migrated_database(shared_server_url())
        _by_data_dir[key] = url
        if _test_scope is not None:
            _test_scope.append(url)
    return _by_data_dir[key]


def begin_test() -> None:
    global _test_scope
    _test_scope = []


def end_test() -> None:
    """Drop the databases the test made (and forget their data dirs)."""
    global _test_scope
    made, _test_scope = _test_scope or [], None
    if not made:
        return
    from support.pg import drop_database, shared_server_url

    server = shared_server_url()
    for url in made:
        drop_database(server, url)
    for key in [k for k, v in _by_data_dir.items() if v in made]:
        del _by_data_dir[key]


def end_session() -> None:
    """Stop the server (if one was started); its data dir, with every database, is deleted."""
    _by_data_dir.clear()
    if ON_POSTGRES:
        from support.pg import stop_shared_server

        stop_shared_server()
