from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from worksession.kit.sqltypes import UTCDateTime
from worksession.models.base import Base, Timestamped, UserId


class ChatMessage(Timestamped, Base):
    """An anonymous chat message. ``sender_id`` never leaves the service."""

    __tablename__ = "chat_messages"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid(), unique=True, default=uuid.uuid4)
    session_id: Mapped[int] = mapped_column(ForeignKey("work_sessions.id", ondelete="CASCADE"))
    sender_id: Mapped[str] = mapped_column(UserId)
    sender_type: Mapped[str] = mapped_column(String(10))
    message_text: Mapped[str] = mapped_column(Text)
    client_msg_id: Mapped[str | None] = mapped_column(String(64))
    # The seq of the event that announced the message, so that a retried send can be
    # answered with the original ack, byte for byte.
    seq: Mapped[int | None] = mapped_column(Integer)
    delivery_status: Mapped[str] = mapped_column(String(20), default="sent")
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("delivery_status IN ('sent', 'delivered', 'read')", name="delivery_status"),
        CheckConstraint("sender_type IN ('seeker', 'provider')", name="sender_type"),
        # A retried send with the same client id must not store a second message; NULL
        # client ids never collide, on PostgreSQL and SQLite alike.
        UniqueConstraint("session_id", "sender_id", "client_msg_id"),
        # History pages walk (created_at, id) backwards; id breaks timestamp ties.
        Index(None, "session_id", "created_at", "id"),
        Index(None, "expires_at"),
    )
