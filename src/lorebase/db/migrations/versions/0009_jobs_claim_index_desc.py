"""jobs: ``ix_jobs_claim`` with ``priority DESC`` again (SQLite)

0004 made the claim-order index ``(status, priority DESC, run_at, created_at)``, so that a claim
walks it and stops at the first runnable job. On SQLite the ``batch_alter_table("jobs")`` of
0007 (two NOT NULL columns) rebuilt the table and recreated its indexes from reflection, which
dropped the ``DESC``: ``ORDER BY priority DESC, run_at, created_at`` could no longer follow the
index, and every claim sorted the pending jobs of the top priority (a temp B-tree). Claim +
success of a no-op job, one thread: 1.0 ms of CPU at 2,000 pending and 3.5 ms at 20,000 without
the DESC, 0.65 ms at both with it. PostgreSQL kept the index; recreating it there changes nothing.

A later ``batch_alter_table("jobs")`` on SQLite must recreate this index the same way.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index("ix_jobs_claim", "jobs", ["status", sa.text("priority DESC"), "run_at", "created_at"])


def downgrade() -> None:
    pass  # the same index; 0008's SQLite one only lacked the DESC by accident
