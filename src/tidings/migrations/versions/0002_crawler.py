"""crawler platform: crawl jobs, job executions, properties, price history (branch ``platform``)

Revision ID: 0002
Revises: (root of the platform branch; depends on users 0001)
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = None
branch_labels = ("platform",)
depends_on = "0001"

PRICE = sa.Numeric(14, 2)


def upgrade() -> None:
    op.create_table(
        "crawl_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("spider_name", sa.String(64), nullable=False),
        sa.Column("target_urls", sa.JSON(), nullable=False),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("items_scraped", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_crawl_jobs_owner_id", "crawl_jobs", ["owner_id"])
    op.create_index("ix_crawl_jobs_status_lease", "crawl_jobs", ["status", "lease_expires_at"])

    op.create_table(
        "job_executions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("crawl_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("items_scraped", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_job_executions_job_id", "job_executions", ["job_id"])

    op.create_table(
        "properties",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("url", sa.String(2048), nullable=False, unique=True),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("price", PRICE, nullable=True),
        sa.Column("currency", sa.String(8), nullable=True),
        sa.Column("location", sa.String(255), nullable=True),
        sa.Column("bedrooms", sa.Integer(), nullable=True),
        sa.Column("area_m2", sa.Float(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_properties_price", "properties", ["price"])
    op.create_index("ix_properties_location", "properties", ["location"])

    op.create_table(
        "price_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("property_id", sa.Integer(), sa.ForeignKey("properties.id", ondelete="CASCADE"), nullable=False),
        sa.Column("old_price", PRICE, nullable=True),
        sa.Column("new_price", PRICE, nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_price_history_property_id", "price_history", ["property_id"])


def downgrade() -> None:
    op.drop_index("ix_price_history_property_id", table_name="price_history")
    op.drop_table("price_history")
    op.drop_index("ix_properties_location", table_name="properties")
    op.drop_index("ix_properties_price", table_name="properties")
    op.drop_table("properties")
    op.drop_index("ix_job_executions_job_id", table_name="job_executions")
    op.drop_table("job_executions")
    op.drop_index("ix_crawl_jobs_status_lease", table_name="crawl_jobs")
    op.drop_index("ix_crawl_jobs_owner_id", table_name="crawl_jobs")
    op.drop_table("crawl_jobs")
