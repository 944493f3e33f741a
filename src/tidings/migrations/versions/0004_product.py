"""durable channel history (chat rooms) and job attempts (resume after a restart or a lost worker)

Revision ID: 0004 (branch ``platform``)
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("channel", "epoch", "offset", name="uq_channel_messages_position"),
    )
    op.create_index("ix_channel_messages_channel", "channel_messages", ["channel"])
    with op.batch_alter_table("crawl_jobs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("resume_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("crawl_jobs") as batch:
        batch.drop_column("resume_reason")
        batch.drop_column("attempts")
    op.drop_index("ix_channel_messages_channel", "channel_messages")
    op.drop_table("channel_messages")
