from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Uuid,
    text,
)
from sqlalchemy.orm import InstrumentedAttribute, Mapped, mapped_column

from worksession.kit.sqltypes import JSONType, UTCDateTime
from worksession.models.base import Base, Timestamped, UserId

LIVE_STATES_SQL = text("connection_state IN ('waiting', 'active')")
TO_ERASE_SQL = text("erased_at IS NULL AND connection_state IN ('cancelled', 'completed')")
"""Ended sessions whose personal data is still stored: what the retention sweep looks at."""
TO_ERASE_ENDED_AT = "coalesce(cancelled_at, completed_at)"
"""When a session ended; ``ix_work_sessions_to_erase`` indexes exactly this expression."""
PERSONAL_COLUMNS: tuple[str, ...] = (
    "seeker_latitude",
    "seeker_longitude",
    "provider_latitude",
    "provider_longitude",
    "distance_seeker_latitude",
    "distance_seeker_longitude",
    "distance_provider_latitude",
    "distance_provider_longitude",
    "current_distance_meters",
    "seeker_selected_mediums",
    "provider_selected_mediums",
)
"""What the retention sweep erases (PROTOCOL 5): the mediums (phone numbers), both
positions and the distance between them. Ids, states and times stay."""


class WorkSession(Timestamped, Base):
    """The live (then ended) session between the seeker and the provider who accepted.

    Carries every column of the original ``WorkSession`` plus the two participants,
    ``last_seq`` (the event log counter), the two positions the last ``distance_update``
    was computed from (the 50 m rule compares against them), the recorded time of each
    participant's last accepted fix (the fix filter needs it), and the arrival markers.
    The unique constraints on ``session_id`` and ``work_order_id`` provide the original's
    two indexes on those columns.
    """

    __tablename__ = "work_sessions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(Uuid(), unique=True, default=uuid.uuid4)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), unique=True)
    seeker_id: Mapped[str] = mapped_column(UserId)
    provider_id: Mapped[str] = mapped_column(UserId)
    connection_state: Mapped[str] = mapped_column(String(20), default="waiting")
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    message_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Chat messages stored in this session, for the cap on them (kept by the pipeline)."""

    seeker_latitude: Mapped[float | None] = mapped_column(Float)
    seeker_longitude: Mapped[float | None] = mapped_column(Float)
    seeker_last_location_update: Mapped[datetime | None] = mapped_column(UTCDateTime())
    seeker_fix_recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    provider_latitude: Mapped[float | None] = mapped_column(Float)
    provider_longitude: Mapped[float | None] = mapped_column(Float)
    provider_last_location_update: Mapped[datetime | None] = mapped_column(UTCDateTime())
    provider_fix_recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    current_distance_meters: Mapped[float | None] = mapped_column(Float)
    last_distance_update: Mapped[datetime | None] = mapped_column(UTCDateTime())
    distance_seeker_latitude: Mapped[float | None] = mapped_column(Float)
    distance_seeker_longitude: Mapped[float | None] = mapped_column(Float)
    distance_provider_latitude: Mapped[float | None] = mapped_column(Float)
    distance_provider_longitude: Mapped[float | None] = mapped_column(Float)
    nearby_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    arrived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    seeker_selected_mediums: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    provider_selected_mediums: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    mediums_shared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    chat_room_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    chat_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # The original pointed at a user row; users live elsewhere now, so the id and the role
    # ("seeker", "provider" or "system" for the internal API) are kept side by side.
    cancelled_by_id: Mapped[str | None] = mapped_column(UserId)
    cancelled_by: Mapped[str | None] = mapped_column(String(16))
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the retention sweep erased the mediums and positions (PROTOCOL 5, 24 h after the
    # end); also what takes the row out of the sweep's index, so each run reads only what
    # it has to erase, not every session that ever ended.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @classmethod
    def participant(cls, role: str) -> InstrumentedAttribute[str]:
        """The column holding the participant of ``role`` ("seeker" or "provider")."""
        return cls.seeker_id if role == "seeker" else cls.provider_id

    __table_args__ = (
        CheckConstraint(
            "connection_state IN ('waiting', 'active', 'cancelled', 'completed')",
            name="connection_state",
        ),
        CheckConstraint("last_seq >= 0", name="last_seq"),
        # On SQLite a trigger of migration 0003 enforces this instead: adding a CHECK there
        # rebuilds the table, and dropping the old one cascades to every chat message.
        CheckConstraint("seeker_id <> provider_id", name="seeker_not_provider"),
        Index(None, "connection_state"),
        Index(None, "seeker_id"),
        Index(None, "provider_id"),
        # At most one live session per user: the database, not Python, settles the race.
        Index(
            "ux_work_sessions_live_provider",
            "provider_id",
            unique=True,
            postgresql_where=LIVE_STATES_SQL,
            sqlite_where=LIVE_STATES_SQL,
        ),
        Index(
            "ux_work_sessions_live_seeker",
            "seeker_id",
            unique=True,
            postgresql_where=LIVE_STATES_SQL,
            sqlite_where=LIVE_STATES_SQL,
        ),
        # The abandonment job's candidates: live sessions by when they were last touched.
        Index(
            "ix_work_sessions_live_touched",
            "connection_state",
            "updated_at",
            postgresql_where=LIVE_STATES_SQL,
            sqlite_where=LIVE_STATES_SQL,
        ),
        Index(
            "ix_work_sessions_to_erase",
            "connection_state",
            text(TO_ERASE_ENDED_AT),
            postgresql_where=TO_ERASE_SQL,
            sqlite_where=TO_ERASE_SQL,
        ),
    )
