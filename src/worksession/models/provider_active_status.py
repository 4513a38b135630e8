from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean
from sqlalchemy.orm import Mapped, mapped_column

from worksession.kit.clock import utcnow
from worksession.kit.sqltypes import UTCDateTime
from worksession.models.base import Base, UserId


class ProviderActiveStatus(Base):
    """Whether a provider is available for offers; switched off on accept, on at the end."""

    __tablename__ = "provider_active_status"

    provider_id: Mapped[str] = mapped_column(UserId, primary_key=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
