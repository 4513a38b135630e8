from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worksession.kit.sqltypes import UTCDateTime
from worksession.models.base import Base, Timestamped, UserId


class WorkOffer(Timestamped, Base):
    """One row per provider a work order was offered to, with that provider's answer."""

    __tablename__ = "work_offers"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id", ondelete="CASCADE"))
    provider_id: Mapped[str] = mapped_column(UserId)
    status: Mapped[str] = mapped_column(String(16), default="offered")
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "status IN ('offered', 'accepted', 'declined', 'withdrawn', 'expired')", name="status"
        ),
        UniqueConstraint("work_order_id", "provider_id"),
        # ``connected.pending_work`` looks up a provider's open offers.
        Index(None, "provider_id", "status"),
        # A provider's offers newest first (``GET /v1/me/work-orders``).
        Index(None, "provider_id", "work_order_id"),
    )
