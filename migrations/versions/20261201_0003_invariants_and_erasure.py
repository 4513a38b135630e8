"""Invariants the database keeps, and the erasure of personal data past retention.

An ended session never becomes live again and nobody is their own provider: both held by
the database as well as by the deciding functions, so that a bug or a hand-written UPDATE
cannot break them. ``erased_at`` marks the sessions and orders whose personal data the
retention sweep has erased; the partial indexes hold only those still to erase.

SQLite gets triggers where PostgreSQL gets a CHECK: adding a CHECK there means rebuilding
``work_sessions``, and with ``foreign_keys=ON`` (which a migration's transaction cannot
switch off) dropping the old table deletes every chat message and event through their
``ON DELETE CASCADE``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENDED = "('cancelled', 'completed')"
SESSIONS_TO_ERASE = f"erased_at IS NULL AND connection_state IN {ENDED}"
ORDERS_TO_ERASE = "erased_at IS NULL AND status NOT IN ('pending', 'accepted')"

PG_ENDED_STAYS_ENDED = (
    """
CREATE FUNCTION work_sessions_ended_stays_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an ended session cannot change its state (ck_work_sessions_ended_stays_ended)'
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'ck_work_sessions_ended_stays_ended',
              TABLE = 'work_sessions';
END
$$
""",
    f"""
CREATE TRIGGER tr_work_sessions_ended_stays_ended
    BEFORE UPDATE OF connection_state ON work_sessions
    FOR EACH ROW
    WHEN (OLD.connection_state IN {ENDED}
          AND NEW.connection_state IS DISTINCT FROM OLD.connection_state)
    EXECUTE FUNCTION work_sessions_ended_stays_ended()
""",
)

SQLITE_TRIGGERS = (
    f"""
CREATE TRIGGER tr_work_sessions_ended_stays_ended
BEFORE UPDATE OF connection_state ON work_sessions
FOR EACH ROW
WHEN OLD.connection_state IN {ENDED} AND NEW.connection_state IS NOT OLD.connection_state
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: ck_work_sessions_ended_stays_ended');
END
""",
    """
CREATE TRIGGER tr_work_sessions_seeker_not_provider_insert
BEFORE INSERT ON work_sessions
FOR EACH ROW WHEN NEW.seeker_id = NEW.provider_id
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: ck_work_sessions_seeker_not_provider');
END
""",
    """
CREATE TRIGGER tr_work_sessions_seeker_not_provider_update
BEFORE UPDATE OF seeker_id, provider_id ON work_sessions
FOR EACH ROW WHEN NEW.seeker_id = NEW.provider_id
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: ck_work_sessions_seeker_not_provider');
END
""",
)
SQLITE_TRIGGER_NAMES = (
    "tr_work_sessions_ended_stays_ended",
    "tr_work_sessions_seeker_not_provider_insert",
    "tr_work_sessions_seeker_not_provider_update",
)


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    # ADD COLUMN of a nullable column: in place on both, no table rebuild.
    op.add_column("work_sessions", sa.Column("erased_at", sa.DateTime(timezone=True)))
    op.add_column("work_orders", sa.Column("erased_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_work_sessions_to_erase",
        "work_sessions",
        # The state first: SQLite, with no statistics, would otherwise rather read every
        # ended session through ix_work_sessions_connection_state.
        ["connection_state", sa.text("coalesce(cancelled_at, completed_at)")],
        unique=False,
        postgresql_where=sa.text(SESSIONS_TO_ERASE),
        sqlite_where=sa.text(SESSIONS_TO_ERASE),
    )
    op.create_index(
        "ix_work_orders_to_erase",
        "work_orders",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text(ORDERS_TO_ERASE),
        sqlite_where=sa.text(ORDERS_TO_ERASE),
    )
    if _is_sqlite():
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
        return
    op.create_check_constraint(
        op.f("ck_work_sessions_seeker_not_provider"), "work_sessions", "seeker_id <> provider_id"
    )
    for statement in PG_ENDED_STAYS_ENDED:
        op.execute(statement)


def downgrade() -> None:
    if _is_sqlite():
        for name in SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS tr_work_sessions_ended_stays_ended ON work_sessions")
        op.execute("DROP FUNCTION IF EXISTS work_sessions_ended_stays_ended()")
        op.drop_constraint(
            op.f("ck_work_sessions_seeker_not_provider"), "work_sessions", type_="check"
        )
    op.drop_index("ix_work_orders_to_erase", table_name="work_orders")
    op.drop_index("ix_work_sessions_to_erase", table_name="work_sessions")
    # Not batch mode: SQLite (3.35 and later) drops a column no index or rule names in
    # place, where batch mode would rebuild work_sessions and lose its chat (see above).
    op.drop_column("work_orders", "erased_at")
    op.drop_column("work_sessions", "erased_at")
