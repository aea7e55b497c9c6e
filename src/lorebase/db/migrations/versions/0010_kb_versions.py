"""KB config versions and evaluations

A KB's chunking, embedding and store can change after it is built: each change is a new config
version (``kb_versions``) whose chunks (``chunks.version``) and store entries are built beside the
live ones, and ``knowledge_bases.version`` names the live one. Every existing KB gets its
version 1, live, with its current config. ``evaluations`` holds retrieval evaluations.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("knowledge_bases", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("chunks", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.drop_index("ix_chunks_kb_embedded", table_name="chunks")
    op.create_index("ix_chunks_kb_version_embedded", "chunks", ["kb_id", "version", "embedded"])
    op.create_table(
        "kb_versions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "kb_id", sa.String(36), sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("workspace_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("activate", sa.String(12), nullable=False),
        sa.Column("pipeline_id", sa.String(36), nullable=True),
        sa.Column("evaluation_id", sa.String(36), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("failed_documents", JSONType, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.Column("retired_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("kb_id", "version", name="uq_kb_versions_kb_version"),
    )
    op.create_index("ix_kb_versions_kb_id", "kb_versions", ["kb_id"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "kb_id", sa.String(36), sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("workspace_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("request", JSONType, nullable=False),
        sa.Column("results", JSONType, nullable=False),
        sa.Column("per_query", JSONType, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("pipeline_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_evaluations_kb_id", "evaluations", ["kb_id"])
    op.create_index("ix_evaluations_workspace_id", "evaluations", ["workspace_id"])
    # every existing KB: version 1, live, with its config
    op.execute(
        "INSERT INTO kb_versions (id, kb_id, workspace_id, version, config, status, activate, "
        "created_at, completed_at, activated_at) "
        "SELECT id, id, workspace_id, 1, config, 'live', 'always', created_at, processed_at, created_at "
        "FROM knowledge_bases"
    )


def downgrade() -> None:
    op.drop_table("evaluations")
    op.drop_table("kb_versions")
    op.drop_index("ix_chunks_kb_version_embedded", table_name="chunks")
    op.create_index("ix_chunks_kb_embedded", "chunks", ["kb_id", "embedded"])
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("version")
    with op.batch_alter_table("knowledge_bases") as batch:
        batch.drop_column("version")
