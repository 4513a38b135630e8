"""Typing leaves the database: indicators are relayed and stopped by each worker's timer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("typing_indicators", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_typing_indicators_last_typing_at"))
    op.drop_table("typing_indicators")


def downgrade() -> None:
    op.create_table(
        "typing_indicators",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("user_type", sa.String(length=10), nullable=False),
        sa.Column("is_typing", sa.Boolean(), nullable=False),
        sa.Column("last_typing_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["work_sessions.id"],
            name=op.f("fk_typing_indicators_session_id_work_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_typing_indicators")),
        sa.UniqueConstraint(
            "session_id", "user_id", name=op.f("uq_typing_indicators_session_id_user_id")
        ),
    )
    with op.batch_alter_table("typing_indicators", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_typing_indicators_last_typing_at"), ["last_typing_at"], unique=False
        )
