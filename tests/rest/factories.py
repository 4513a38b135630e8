"""Rows the REST tests need beyond tests/factories.py: messages at a chosen time and status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import ChatMessage, WorkSession


async def make_message_at(
    db: AsyncSession,
    *,
    session: WorkSession,
    created_at: datetime,
    sender_type: str = "seeker",
    text: str = "hello",
    status: str = "sent",
    delivered_at: datetime | None = None,
    read_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> ChatMessage:
    sender_id = session.seeker_id if sender_type == "seeker" else session.provider_id
    message = ChatMessage(
        session_id=session.id,
        sender_id=sender_id,
        sender_type=sender_type,
        message_text=text,
        delivery_status=status,
        delivered_at=delivered_at,
        read_at=read_at,
        expires_at=expires_at,
        created_at=created_at,
        updated_at=created_at,
    )
    db.add(message)
    await db.flush()
    return message
