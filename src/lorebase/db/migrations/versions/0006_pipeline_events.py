"""pipeline events: the durable log behind ``GET /pipelines/{id}/events`` (SSE with Last-Event-ID)

Pipelines that had already ended get one ``end`` event, so a client following one of them is
told at once that it is over.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lorebase.db.models import JSONType, UTCDateTime, utcnow

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FINAL = ("completed", "completed_with_errors", "failed", "cancelled")


def upgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("event_seq", sa.Integer(), nullable=False, server_default="0"))
    events = op.create_table(
        "pipeline_events",
        sa.Column(
            "pipeline_id", sa.String(36), sa.ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    bind = op.get_bind()
    pipelines = sa.table(
        "pipelines",
        sa.column("id", sa.String),
        sa.column("kb_id", sa.String),
        sa.column("status", sa.String),
        sa.column("message", sa.Text),
        sa.column("error", sa.Text),
        sa.column("event_seq", sa.Integer),
    )
    ended = bind.execute(
        sa.select(
            pipelines.c.id, pipelines.c.kb_id, pipelines.c.status, pipelines.c.message, pipelines.c.error
        ).where(pipelines.c.status.in_(FINAL))
    ).all()
    if ended:
        now = utcnow()
        op.bulk_insert(
            events,
            [
                {
                    "pipeline_id": r.id,
                    "seq": 1,
                    "kind": "end",
                    "data": {
                        "id": r.id,
                        "kb_id": r.kb_id,
                        "status": r.status,
                        "phase": "done",
                        "progress": 100,
                        "message": r.message,
                        "error": r.error,
                    },
                    "created_at": now,
                }
                for r in ended
            ],
        )
        bind.execute(sa.update(pipelines).where(pipelines.c.status.in_(FINAL)).values(event_seq=1))


def downgrade() -> None:
    op.drop_table("pipeline_events")
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("event_seq")
