"""A partial index on live sessions' ``updated_at``, for the job that cancels sessions
nobody has touched for ``WORKSESSION_ABANDON_AFTER_S`` (PROTOCOL 5, *1.1*).

No new column: ``updated_at`` of a live session moves with every frame a participant
sends for it and the pipeline keeps, and with nothing else.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "connection_state IN ('waiting', 'active')"


def upgrade() -> None:
    op.create_index(
        "ix_work_sessions_live_touched",
        "work_sessions",
        # The state first, as in ix_work_sessions_to_erase: SQLite, with no statistics,
        # would otherwise rather read every live session through the state's own index.
        ["connection_state", "updated_at"],
        unique=False,
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )


def downgrade() -> None:
    op.drop_index("ix_work_sessions_live_touched", table_name="work_sessions")
