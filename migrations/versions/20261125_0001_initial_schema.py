"""Initial schema: work orders and offers, sessions, chat, typing, the event log, availability.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:30:00.596189
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_active_status",
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_provider_active_status")),
    )
    op.create_table(
        "seeker_search_preference",
        sa.Column("seeker_id", sa.String(length=64), nullable=False),
        sa.Column("is_searching", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seeker_id", name=op.f("pk_seeker_search_preference")),
    )
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("seeker_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("seeker_latitude", sa.Float(), nullable=True),
        sa.Column("seeker_longitude", sa.Float(), nullable=True),
        sa.Column("offer_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'rejected', 'expired', 'cancelled', 'completed')",
            name=op.f("ck_work_orders_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_orders")),
    )
    with op.batch_alter_table("work_orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_work_orders_seeker_id"), ["seeker_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_work_orders_status_offer_expires_at"),
            ["status", "offer_expires_at"],
            unique=False,
        )

    op.create_table(
        "work_offers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("work_order_id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("responded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('offered', 'accepted', 'declined', 'withdrawn', 'expired')",
            name=op.f("ck_work_offers_status"),
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_work_offers_work_order_id_work_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_offers")),
        sa.UniqueConstraint(
            "work_order_id", "provider_id", name=op.f("uq_work_offers_work_order_id_provider_id")
        ),
    )
    with op.batch_alter_table("work_offers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_work_offers_provider_id_status"), ["provider_id", "status"], unique=False
        )

    op.create_table(
        "work_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("work_order_id", sa.Integer(), nullable=False),
        sa.Column("seeker_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("connection_state", sa.String(length=20), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("seeker_latitude", sa.Float(), nullable=True),
        sa.Column("seeker_longitude", sa.Float(), nullable=True),
        sa.Column("seeker_last_location_update", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seeker_fix_recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_latitude", sa.Float(), nullable=True),
        sa.Column("provider_longitude", sa.Float(), nullable=True),
        sa.Column("provider_last_location_update", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_fix_recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_distance_meters", sa.Float(), nullable=True),
        sa.Column("last_distance_update", sa.DateTime(timezone=True), nullable=True),
        sa.Column("distance_seeker_latitude", sa.Float(), nullable=True),
        sa.Column("distance_seeker_longitude", sa.Float(), nullable=True),
        sa.Column("distance_provider_latitude", sa.Float(), nullable=True),
        sa.Column("distance_provider_longitude", sa.Float(), nullable=True),
        sa.Column("nearby_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "seeker_selected_mediums",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "provider_selected_mediums",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.Column("mediums_shared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("chat_room_id", sa.Uuid(), nullable=True),
        sa.Column("chat_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by_id", sa.String(length=64), nullable=True),
        sa.Column("cancelled_by", sa.String(length=16), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "connection_state IN ('waiting', 'active', 'cancelled', 'completed')",
            name=op.f("ck_work_sessions_connection_state"),
        ),
        sa.CheckConstraint("last_seq >= 0", name=op.f("ck_work_sessions_last_seq")),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_work_sessions_work_order_id_work_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_work_sessions_session_id")),
        sa.UniqueConstraint("work_order_id", name=op.f("uq_work_sessions_work_order_id")),
    )
    with op.batch_alter_table("work_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_work_sessions_connection_state"), ["connection_state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_work_sessions_provider_id"), ["provider_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_work_sessions_seeker_id"), ["seeker_id"], unique=False)
        batch_op.create_index(
            "ux_work_sessions_live_provider",
            ["provider_id"],
            unique=True,
            postgresql_where=sa.text("connection_state IN ('waiting', 'active')"),
            sqlite_where=sa.text("connection_state IN ('waiting', 'active')"),
        )
        batch_op.create_index(
            "ux_work_sessions_live_seeker",
            ["seeker_id"],
            unique=True,
            postgresql_where=sa.text("connection_state IN ('waiting', 'active')"),
            sqlite_where=sa.text("connection_state IN ('waiting', 'active')"),
        )

    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("sender_id", sa.String(length=64), nullable=False),
        sa.Column("sender_type", sa.String(length=10), nullable=False),
        sa.Column("message_text", sa.Text(), nullable=False),
        sa.Column("client_msg_id", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("delivery_status", sa.String(length=20), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "delivery_status IN ('sent', 'delivered', 'read')",
            name=op.f("ck_chat_messages_delivery_status"),
        ),
        sa.CheckConstraint(
            "sender_type IN ('seeker', 'provider')", name=op.f("ck_chat_messages_sender_type")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["work_sessions.id"],
            name=op.f("fk_chat_messages_session_id_work_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.UniqueConstraint("message_id", name=op.f("uq_chat_messages_message_id")),
        sa.UniqueConstraint(
            "session_id",
            "sender_id",
            "client_msg_id",
            name=op.f("uq_chat_messages_session_id_sender_id_client_msg_id"),
        ),
    )
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_chat_messages_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_chat_messages_session_id_created_at_id"),
            ["session_id", "created_at", "id"],
            unique=False,
        )

    op.create_table(
        "session_events",
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["work_sessions.id"],
            name=op.f("fk_session_events_session_id_work_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "seq", name=op.f("pk_session_events")),
    )
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


def downgrade() -> None:
    with op.batch_alter_table("typing_indicators", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_typing_indicators_last_typing_at"))

    op.drop_table("typing_indicators")
    op.drop_table("session_events")
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chat_messages_session_id_created_at_id"))
        batch_op.drop_index(batch_op.f("ix_chat_messages_expires_at"))

    op.drop_table("chat_messages")
    with op.batch_alter_table("work_sessions", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_work_sessions_live_seeker",
            postgresql_where=sa.text("connection_state IN ('waiting', 'active')"),
            sqlite_where=sa.text("connection_state IN ('waiting', 'active')"),
        )
        batch_op.drop_index(
            "ux_work_sessions_live_provider",
            postgresql_where=sa.text("connection_state IN ('waiting', 'active')"),
            sqlite_where=sa.text("connection_state IN ('waiting', 'active')"),
        )
        batch_op.drop_index(batch_op.f("ix_work_sessions_seeker_id"))
        batch_op.drop_index(batch_op.f("ix_work_sessions_provider_id"))
        batch_op.drop_index(batch_op.f("ix_work_sessions_connection_state"))

    op.drop_table("work_sessions")
    with op.batch_alter_table("work_offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_offers_provider_id_status"))

    op.drop_table("work_offers")
    with op.batch_alter_table("work_orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_orders_status_offer_expires_at"))
        batch_op.drop_index(batch_op.f("ix_work_orders_seeker_id"))

    op.drop_table("work_orders")
    op.drop_table("seeker_search_preference")
    op.drop_table("provider_active_status")
