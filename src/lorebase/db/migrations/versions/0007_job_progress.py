"""the job engine's attempt rule and settle's repairs

* ``jobs.claims``: how many times the job was claimed, never given back; with ``lease_owner``
  it is the fencing token, so ``attempts`` can count only what counts against
  ``max_attempts`` (progress starts the count afresh);
* ``jobs.progressed``: the current attempt saved a checkpoint or progress (reset at each claim);
* ``pipelines.repairs``: how many times settling found work no job covered and queued it again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("claims", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("progressed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE jobs SET claims = attempts")
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("repairs", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("repairs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("progressed")
        batch.drop_column("claims")
