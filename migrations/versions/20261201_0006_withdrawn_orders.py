"""Work orders a seeker withdrew (``cancel_work``, *1.1*), and the indexes of
``GET /v1/me/work-orders``.

The order status CHECK gains ``withdrawn``; the offers' own CHECK already allows
``withdrawn`` (an offer made moot by another provider's accept), which is what the open
offers of a withdrawn order become. Two indexes serve the listing newest first: a seeker's
orders by ``(seeker_id, id)``, which replaces the index on ``seeker_id`` alone (a prefix
of it), and a provider's offers by ``(provider_id, work_order_id)``.

On SQLite the CHECK is part of the table's text and ALTER TABLE cannot change it; a
rebuild would drop ``work_orders`` with ``foreign_keys=ON`` (which a migration's
transaction cannot switch off), deleting every offer through their ON DELETE CASCADE and
failing on the sessions' foreign key. The CHECK is edited in ``sqlite_schema`` instead,
the procedure SQLite documents for changes that leave the stored rows as they are
(lang_altertable.html, "making other kinds of table schema changes"): allowing one more
value is such a change, and the downgrade narrows it back only once no row holds it.

Down, a withdrawn order becomes ``expired``: the old schema's closest final status for an
order that nobody took and that has no session.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = "('pending', 'accepted', 'rejected', 'expired', 'cancelled', 'completed')"
AFTER = "('pending', 'accepted', 'rejected', 'expired', 'cancelled', 'completed', 'withdrawn')"
CONSTRAINT = "ck_work_orders_status"


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _sqlite_status_check(old: str, new: str) -> None:
    """Rewrite the status CHECK of ``work_orders`` in SQLite's schema table, in the
    migration's transaction: bump ``schema_version`` so that every connection rereads it."""
    bind = op.get_bind()
    (sql,) = bind.execute(
        sa.text("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'work_orders'")
    ).one()
    check = f"CHECK (status IN {old})"
    if sql.count(check) != 1:
        raise RuntimeError(f"work_orders has no single {CONSTRAINT} {old}: not rewriting it")
    (version,) = bind.execute(sa.text("PRAGMA schema_version")).one()
    bind.execute(sa.text("PRAGMA writable_schema = ON"))
    bind.execute(
        sa.text(
            "UPDATE sqlite_schema SET sql = :sql WHERE type = 'table' AND name = 'work_orders'"
        ),
        {"sql": sql.replace(check, f"CHECK (status IN {new})")},
    )
    bind.execute(sa.text(f"PRAGMA schema_version = {int(version) + 1}"))
    bind.execute(sa.text("PRAGMA writable_schema = OFF"))
    (ok,) = bind.execute(sa.text("PRAGMA quick_check")).one()
    if ok != "ok":
        raise RuntimeError(f"SQLite's quick_check after the CHECK rewrite: {ok}")


def upgrade() -> None:
    if _is_sqlite():
        _sqlite_status_check(BEFORE, AFTER)
    else:
        op.drop_constraint(op.f(CONSTRAINT), "work_orders", type_="check")
        op.create_check_constraint(op.f(CONSTRAINT), "work_orders", f"status IN {AFTER}")
    op.create_index("ix_work_orders_seeker_id_id", "work_orders", ["seeker_id", "id"])
    op.drop_index("ix_work_orders_seeker_id", table_name="work_orders")
    op.create_index(
        "ix_work_offers_provider_id_work_order_id", "work_offers", ["provider_id", "work_order_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_work_offers_provider_id_work_order_id", table_name="work_offers")
    op.create_index("ix_work_orders_seeker_id", "work_orders", ["seeker_id"])
    op.drop_index("ix_work_orders_seeker_id_id", table_name="work_orders")
    op.execute("UPDATE work_orders SET status = 'expired' WHERE status = 'withdrawn'")
    if _is_sqlite():
        _sqlite_status_check(AFTER, BEFORE)
    else:
        op.drop_constraint(op.f(CONSTRAINT), "work_orders", type_="check")
        op.create_check_constraint(op.f(CONSTRAINT), "work_orders", f"status IN {BEFORE}")
