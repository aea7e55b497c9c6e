"""Alembic environment: runs on the engine handed over by ``lorebase.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from lorebase.db.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` CLI use: build from settings
    from lorebase.db.engine import make_engine
    from lorebase.settings import get_settings

    engine = make_engine(get_settings().resolved_database_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # API nodes and workers starting together migrate one after the other; the later
            # ones then find nothing to do (the lock ends with the migration's transaction)
            connection.execute(text("SELECT pg_advisory_xact_lock(7305802733990571891)"))
        context.run_migrations()
