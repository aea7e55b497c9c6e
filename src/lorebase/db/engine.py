"""Engine and session factory.

SQLite (the embedded default) gets WAL, a busy timeout, foreign keys, the sqlite-vec
extension, and ``BEGIN IMMEDIATE`` for write transactions: a deferred transaction that later
upgrades to a write lock can fail with SQLITE_BUSY without waiting, which would surface as
spurious errors under concurrent workers. Read-only sessions use a deferred ``BEGIN`` so that
searches never wait for writers (WAL readers see a consistent snapshot).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


@functools.cache
def sqlite_module() -> Any:
    """The stdlib module when it can load extensions, else pysqlite3 (same API, bundled SQLite)."""
    probe = sqlite3.connect(":memory:")
    try:
        if hasattr(probe, "enable_load_extension"):
            return sqlite3
    finally:
        probe.close()
    import pysqlite3.dbapi2 as pysqlite3

    return pysqlite3


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def insert_or_skip(
    session: Session,
    table: Any,
    rows: dict[str, Any] | list[dict[str, Any]],
    *,
    index_elements: list[str] | None = None,
    index_where: Any = None,
) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` in the session's dialect (SQLite or PostgreSQL): rows
    that would break a unique constraint (the one on ``index_elements``, partial when
    ``index_where`` is given; any when neither is) are skipped. Returns the statement, for the
    caller to execute (with ``.returning(…)`` when it needs to know what went in)."""
    dialect = session.get_bind().dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table).values(rows)
    if index_elements is None:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_nothing(index_elements=index_elements, index_where=index_where)


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        module=sqlite_module(),
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=10,
        max_overflow=20,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        import sqlite_vec

        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
        dbapi_conn.enable_load_extension(True)
        sqlite_vec.load(dbapi_conn)
        dbapi_conn.enable_load_extension(False)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("lorebase_readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """Owns the engine; hands out short transactions. Built once per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(
            self.engine.execution_options(lorebase_readonly=True), expire_on_commit=False
        )
        self._writer_lock = threading.RLock() if is_sqlite(self.engine) else None

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception.

        On SQLite, writers in this process also queue on a process-wide lock: SQLite's own busy
        handler waits by sleeping with backoff (up to 100 ms a nap), so under steady worker writes a
        short API transaction could wait far longer than the lock is held. Waiting on a Python lock
        wakes the next writer as soon as the previous one commits. Other processes still meet at
        SQLite's lock.
        """
        if self._writer_lock is None:
            with self._write() as s, s.begin():
                yield s
            return
        with self._writer_lock, self._write() as s, s.begin():
            yield s

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A write transaction on a Core connection, for statements that need no ORM (the job
        engine's claim, heartbeat and success: no Session bookkeeping per step). The same rules
        as ``session()``: committed on success, rolled back on any exception, and on SQLite the
        process's writer lock is held throughout."""
        if self._writer_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._writer_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only snapshot (deferred transaction on SQLite); never commits.

        Closing (not rolling back) ends the transaction and leaves loaded objects readable.
        """
        with self._read() as s:
            yield s

    def dispose(self) -> None:
        self.engine.dispose()
