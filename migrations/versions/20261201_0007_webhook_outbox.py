"""The webhook outbox: one row per webhook to POST, written in the same transaction as the
event it reports, sent and retried by every worker's dispatcher (contract 1.1, section 8).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
OPEN_CHAT = sa.text("status = 'pending' AND first_sent_at IS NULL AND coalesce_key IS NOT NULL")
CHAT = sa.text("coalesce_key IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("user_type", sa.String(length=16), nullable=False),
        sa.Column("work_id", sa.Integer(), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("coalesce_key", sa.String(length=160), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("give_up_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("online_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'skipped', 'dead')",
            name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ux_webhook_deliveries_open_chat",
        "webhook_deliveries",
        ["coalesce_key"],
        unique=True,
        postgresql_where=OPEN_CHAT,
        sqlite_where=OPEN_CHAT,
    )
    op.create_index(
        "ix_webhook_deliveries_chat",
        "webhook_deliveries",
        ["coalesce_key", "first_sent_at"],
        postgresql_where=CHAT,
        sqlite_where=CHAT,
    )
    op.create_index(
        op.f("ix_webhook_deliveries_status_updated_at"),
        "webhook_deliveries",
        ["status", "updated_at"],
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
