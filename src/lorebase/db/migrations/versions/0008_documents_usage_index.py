"""the workspace quota's usage read from an index

``services/quotas.usage`` counts a workspace's documents and sums the bytes of its files and
text records on every upload and finalize. With only ``workspace_id`` indexed, each counted
document was a table row read: 4 ms of a finalize at 2,000 documents, growing with the
workspace. ``ix_documents_workspace_usage`` (workspace_id, source_type, size_bytes) answers it
from the index alone, and replaces ``ix_documents_workspace_id``, its prefix.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 23:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.create_index("ix_documents_workspace_usage", ["workspace_id", "source_type", "size_bytes"])
        batch.drop_index("ix_documents_workspace_id")


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.create_index("ix_documents_workspace_id", ["workspace_id"])
        batch.drop_index("ix_documents_workspace_usage")
