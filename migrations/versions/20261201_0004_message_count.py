"""A per-session count of chat messages, kept by the write pipeline, so that the cap on
messages per session (``WORKSESSION_MAX_MESSAGES_PER_SESSION``) costs no count query.

Sessions that already have messages are counted once here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: on SQLite a batch (rebuilt) table would delete
    # every message and event of the old one through their ON DELETE CASCADE.
    op.add_column(
        "work_sessions",
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
    )
    op.execute(
        "UPDATE work_sessions SET message_count = ("
        "SELECT count(*) FROM chat_messages WHERE chat_messages.session_id = work_sessions.id"
        ") WHERE EXISTS ("
        "SELECT 1 FROM chat_messages WHERE chat_messages.session_id = work_sessions.id)"
    )


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place (no rebuild, so no cascade).
    op.drop_column("work_sessions", "message_count")
