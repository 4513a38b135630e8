from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from worksession.kit.clock import utcnow
from worksession.kit.sqltypes import JSONType, UTCDateTime
from worksession.models.base import Base


class SessionEvent(Base):
    """One persisted event of a session's history, numbered by ``seq`` from 1 without gaps.

    Written in the same transaction as the state change it reports; ``resume`` replays
    these rows. Swept together with the session's chat messages once they expire.
    """

    __tablename__ = "session_events"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("work_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
