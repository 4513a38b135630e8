from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Float, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from worksession.kit.sqltypes import JSONType, UTCDateTime
from worksession.models.base import Base, Timestamped, UserId

TO_ERASE_SQL = text("erased_at IS NULL AND status NOT IN ('pending', 'accepted')")
"""Orders that have ended (every status but these two is final) and still hold their
details and the seeker's location: what the retention sweep looks at."""
STATUSES = "('pending', 'accepted', 'rejected', 'expired', 'cancelled', 'completed', 'withdrawn')"
"""What the CHECK constraint named ``status`` allows (``sessions.states.WorkOrderStatus``)."""
PERSONAL_COLUMNS: tuple[str, ...] = ("details", "seeker_latitude", "seeker_longitude")
"""What the retention sweep erases (PROTOCOL 5): ``details`` becomes ``{}``, the location
null."""


class WorkOrder(Timestamped, Base):
    """A seeker's request for work, offered to one or more providers (``work_offers``)."""

    __tablename__ = "work_orders"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    seeker_id: Mapped[str] = mapped_column(UserId)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    seeker_latitude: Mapped[float | None] = mapped_column(Float)
    seeker_longitude: Mapped[float | None] = mapped_column(Float)
    offer_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When the retention sweep emptied ``details`` and the location. An ended order is
    # never written again, so its ``updated_at`` is the time it ended, which the sweep
    # counts the retention from.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            f"status IN {STATUSES}",
            name="status",
        ),
        # The offer-expiry job scans pending orders by deadline.
        Index(None, "status", "offer_expires_at"),
        # A seeker's orders newest first (``GET /v1/me/work-orders``), and their pending
        # ones (``connected.open_orders``).
        Index(None, "seeker_id", "id"),
        Index(
            "ix_work_orders_to_erase",
            "updated_at",
            postgresql_where=TO_ERASE_SQL,
            sqlite_where=TO_ERASE_SQL,
        ),
    )
