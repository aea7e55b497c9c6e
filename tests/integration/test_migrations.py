"""Alembic migrations on both engines: SQLite (embedded) and PostgreSQL (scale-out).

Each case upgrades an empty database to head and compares the result with the models (no
difference allowed: a model change without its migration fails here), downgrades to base
(nothing of lorebase's left) and upgrades again. PostgreSQL is the machine's server on
127.0.0.1:5432 (``LOREBASE_TEST_POSTGRES_URL`` to use another); each run gets a database of its
own (``support.pg.create_database``), dropped afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from lorebase.db.engine import make_engine
from lorebase.db.migrate import alembic_config, upgrade
from lorebase.db.models import Base
from support.pg import create_database, drop_database

POSTGRES_URL = os.environ.get(
    "LOREBASE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_engine() -> Iterator[Engine]:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    try:
        url = create_database(POSTGRES_URL)
    except Exception as exc:  # pragma: no cover - CI starts PostgreSQL before the tests
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        drop_database(POSTGRES_URL, url)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'lorebase.db'}")
    yield engine
    engine.dispose()


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(
            compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        )


def _lorebase_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) & set(Base.metadata.tables)


@pytest.mark.parametrize("engine_fixture", ["sqlite_engine", "postgres_engine"])
def test_migrations_build_the_models_and_come_back_down(
    engine_fixture: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(engine_fixture)

    upgrade(engine)
    assert _lorebase_tables(engine) == set(Base.metadata.tables)
    assert _differences(engine) == []

    command.downgrade(alembic_config(engine), "base")
    assert _lorebase_tables(engine) == set()

    upgrade(engine)  # and up again, from nothing
    assert _differences(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0


@pytest.mark.parametrize("engine_fixture", ["sqlite_engine", "postgres_engine"])
def test_claim_order_index_keeps_priority_descending(
    engine_fixture: str, request: pytest.FixtureRequest
) -> None:
    """A claim walks ``ix_jobs_claim`` and stops at its first runnable job only when the index has
    the claim's order, ``priority DESC`` included (SQLite's table rebuild in 0007 had dropped it:
    every claim then sorted the pending jobs; 0009 restores it)."""
    engine: Engine = request.getfixturevalue(engine_fixture)
    upgrade(engine)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            order = conn.execute(
                text("SELECT name, \"desc\" FROM pragma_index_xinfo('ix_jobs_claim') WHERE key")
            )
            assert [tuple(r) for r in order] == [
                ("status", 0),
                ("priority", 1),
                ("run_at", 0),
                ("created_at", 0),
            ]
            plan = conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE status = 'pending' "
                    "ORDER BY priority DESC, run_at, created_at LIMIT 1"
                )
            )
            details = [r[3] for r in plan]
            assert any("ix_jobs_claim" in d for d in details), details
            assert not any("TEMP B-TREE" in d for d in details), details
        else:
            indexdef = conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_claim'")
            ).scalar()
            assert indexdef is not None and "(status, priority DESC, run_at, created_at)" in indexdef
