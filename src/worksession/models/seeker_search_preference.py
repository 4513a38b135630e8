from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean
from sqlalchemy.orm import Mapped, mapped_column

from worksession.kit.clock import utcnow
from worksession.kit.sqltypes import UTCDateTime
from worksession.models.base import Base, UserId


class SeekerSearchPreference(Base):
    """Whether a seeker is searching; off while a session is live, on again after a cancel."""

    __tablename__ = "seeker_search_preference"

    seeker_id: Mapped[str] = mapped_column(UserId, primary_key=True)
    is_searching: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
