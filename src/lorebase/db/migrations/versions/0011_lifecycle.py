"""Storage and lifecycle: tenant tiers, the scheduler, scheduled refreshes, retention

- ``workspaces.priority`` (added to its jobs' priority), ``workspaces.pool`` (the worker pool that
  takes its jobs; NULL: the default workers) and ``workspaces.retention`` (per-tenant retention:
  ``originals_days``, ``query_logs_days``);
- ``jobs.pool``: copied from the workspace when the job is queued, read by the claim;
- ``schedules``: one row per periodic task, the period it last ran for (compare-and-set: exactly
  one process queues each period's job) and when it runs next;
- ``sources.refresh_seconds`` / ``sources.next_refresh_at``: a web source's ``refresh_every``;
- ``pipelines.not_before``: a pipeline whose jobs wait until then;
- ``documents.original_removed_at``: the original was deleted by the workspace's retention;
- ``server_secrets``: keys every process of a deployment shares (the signed-URL key).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("workspaces", sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("workspaces", sa.Column("pool", sa.String(100), nullable=True))
    op.add_column("workspaces", sa.Column("retention", JSONType, nullable=False, server_default="{}"))
    op.add_column("jobs", sa.Column("pool", sa.String(100), nullable=True))
    op.add_column("sources", sa.Column("refresh_seconds", sa.Integer(), nullable=True))
    op.add_column("sources", sa.Column("next_refresh_at", sa.DateTime(), nullable=True))
    op.create_index("ix_sources_next_refresh_at", "sources", ["next_refresh_at"])
    op.add_column("pipelines", sa.Column("not_before", sa.DateTime(), nullable=True))
    op.add_column("documents", sa.Column("original_removed_at", sa.DateTime(), nullable=True))
    op.create_index("ix_blobs_created_at", "blobs", ["created_at"])
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(60), primary_key=True),
        sa.Column("period_seconds", sa.Float(), nullable=False),
        sa.Column("last_period", sa.BigInteger(), nullable=False, server_default="-1"),
        sa.Column("last_job_id", sa.String(36), nullable=True),
        sa.Column("last_run_at", sa.DateTime(), nullable=True),
        sa.Column("next_run_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_table("schedules")
    op.drop_index("ix_blobs_created_at", table_name="blobs")
    op.drop_column("documents", "original_removed_at")
    op.drop_column("pipelines", "not_before")
    op.drop_index("ix_sources_next_refresh_at", table_name="sources")
    op.drop_column("sources", "next_refresh_at")
    op.drop_column("sources", "refresh_seconds")
    op.drop_column("jobs", "pool")
    op.drop_column("workspaces", "retention")
    op.drop_column("workspaces", "pool")
    op.drop_column("workspaces", "priority")
