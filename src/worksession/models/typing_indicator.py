from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worksession.kit.sqltypes import UTCDateTime
from worksession.models.base import Base, Timestamped, UserId


class TypingIndicator(Timestamped, Base):
    """Who is typing in which session; the unique key doubles as the original's index."""

    __tablename__ = "typing_indicators"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("work_sessions.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(UserId)
    user_type: Mapped[str] = mapped_column(String(10))
    is_typing: Mapped[bool] = mapped_column(Boolean, default=False)
    last_typing_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("session_id", "user_id"),
        # The hourly sweep deletes stale rows by age.
        Index(None, "last_typing_at"),
    )
