"""A real PostgreSQL 16 with pgvector for tests, started by ``pgserver`` in a temp dir.

``pg_url`` (session-scoped) yields a ``postgresql+psycopg://`` URL of the ``postgres`` database
of one server shared by the whole test session (``shared_server_url``: started on first use,
also by ``LOREBASE_TEST_DATABASE=postgres`` runs, see ``support.testdb``), and stops it (and
deletes its data dir) at the end. ``fresh_database`` makes an empty database on that server per
test, so cases never see each other's rows, and drops it afterwards.

``migrated_database`` makes a database that is already at the head migration, with the
pgvector store's table: a copy (``CREATE DATABASE … TEMPLATE``) of one template database that
is migrated once per server. An app database costs a file copy instead of running every
migration again for every test; the migrations themselves are tested from an empty database
by ``tests/integration/test_migrations.py``.

Tests that need the server import the fixture into their module::

    from support.pg import fresh_database, pg_url  # noqa: F401  (pytest fixture)

The session skips those tests (with the reason) only when ``pgserver`` is not installed.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lorebase.adapters.stores.pgvector import PgvectorStore
from lorebase.db.engine import Database
from lorebase.db.migrate import upgrade


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


_shared: ExitStack | None = None
_shared_url: str | None = None


def shared_server_url() -> str:
    """The URL of this process's one test server, started on first use (``stop_shared_server`` ends it)."""
    global _shared, _shared_url
    if _shared_url is None:
        stack = ExitStack()
        try:
            url = stack.enter_context(running_pgserver())
        except BaseException:
            stack.close()
            raise
        atexit.register(stop_shared_server)  # a backstop: the session normally stops it first
        _shared, _shared_url = stack, url
    return _shared_url


def stop_shared_server() -> None:
    """Stop the shared server and delete its temp dir; nothing if it is not running."""
    global _shared, _shared_url
    stack, _shared, _shared_url = _shared, None, None
    _templates.clear()
    if stack is not None:
        stack.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    yield shared_server_url()
    stop_shared_server()


def create_database(server_url: str, *, template: str | None = None) -> str:
    """Make a new database on the server at ``server_url`` (empty, or a copy of the database
    named ``template``); return its URL."""
    name = f"lorebase_test_{uuid.uuid4().hex[:12]}"  # generated here: safe to quote into DDL
    copy = f' TEMPLATE "{template}"' if template else ""
    _admin(server_url, f'CREATE DATABASE "{name}"{copy}')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


_templates: dict[str, str] = {}


def migrated_database(server_url: str) -> str:
    """A new database at the head migration, with the pgvector store's tables; return its URL."""
    if server_url not in _templates:
        url = create_database(server_url)
        db = Database(url)
        try:
            upgrade(db.engine)
            with db.session() as s:
                PgvectorStore(384).ensure_schema(s)
        finally:
            db.dispose()  # a template must have no open connection when it is copied
        name = make_url(url).database
        assert name is not None
        _templates[server_url] = name
    return create_database(server_url, template=_templates[server_url])


def drop_database(server_url: str, database_url: str) -> None:
    """Drop a database made by ``create_database``, ending any connections still open to it."""
    name = make_url(database_url).database
    assert name and name.startswith("lorebase_test_"), name
    _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(server_url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE) on the server's own database."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


@contextmanager
def database_on(server_url: str) -> Iterator[Database]:
    """A new, empty database on the server at ``server_url``, dropped (connections and all) on exit."""
    url = create_database(server_url)
    try:
        db = Database(url)
        try:
            yield db
        finally:
            db.dispose()
    finally:
        drop_database(server_url, url)


@pytest.fixture
def fresh_database(pg_url: str) -> Iterator[Database]:
    with database_on(pg_url) as db:
        yield db


@contextmanager
def migrated_database_of_its_own() -> Iterator[tuple[str, Database]]:
    """A migrated database of its own on the shared server, as (url, Database); dropped after."""
    server = shared_server_url()
    url = migrated_database(server)
    db = Database(url)
    try:
        yield url, db
    finally:
        db.dispose()
        drop_database(server, url)
