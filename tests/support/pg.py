"""A real PostgreSQL 16 with pgvector for tests, started by ``pgserver`` in a temp dir.

``pg_url`` (session-scoped) starts one server for the whole test session and stops it (and
deletes its data dir) at the end; it yields a ``postgresql+psycopg://`` URL of the server's
``postgres`` database. ``fresh_database`` makes an empty database on that server per test, so
cases never see each other's rows, and drops it afterwards.

Tests that need the server import the fixture into their module::

    from support.pg import fresh_database, pg_url  # noqa: F401  (pytest fixture)

The session skips those tests (with the reason) only when ``pgserver`` is not installed.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lorebase.db.engine import Database


@contextmanager
def running_pgserver() -> Iterator[str]:
    """Start PostgreSQL (pgserver) in a new temp dir; yield its SQLAlchemy URL; stop and delete it."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI containers); pgserver then uses /tmp
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        pgserver = pytest.importorskip("pgserver", reason="pgserver is not installed (pip install pgserver)")
        base = Path(tempfile.mkdtemp(prefix="lorebase-pg-"))
        try:
            server = pgserver.get_server(base / "pgdata", cleanup_mode="delete")
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
    try:
        url = make_url(server.get_uri()).set(drivername="postgresql+psycopg")
        yield url.render_as_string(hide_password=False)
    finally:
        server.cleanup()  # pg_ctl -w stop, then the data dir is deleted
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with running_pgserver() as url:
        yield url


@contextmanager
def database_on(server_url: str) -> Iterator[Database]:
    """A new, empty database on the server at ``server_url``, dropped (connections and all) on exit."""
    name = f"lorebase_test_{uuid.uuid4().hex[:12]}"  # generated here: safe to quote into DDL
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        db = Database(make_url(server_url).set(database=name).render_as_string(hide_password=False))
        try:
            yield db
        finally:
            db.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def fresh_database(pg_url: str) -> Iterator[Database]:
    with database_on(pg_url) as db:
        yield db
