"""Keyword-only async factories that write rows the way the services would."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from worksession.kit.clock import utcnow
from worksession.models import ChatMessage, WorkOrder, WorkSession


async def make_work_order(
    db: AsyncSession, *, seeker_id: str = "seeker-1", status: str = "pending", **fields: Any
) -> WorkOrder:
    order = WorkOrder(
        seeker_id=seeker_id,
        status=status,
        details=fields.pop("details", {}),
        offer_expires_at=fields.pop("offer_expires_at", utcnow() + timedelta(minutes=2)),
        **fields,
    )
    db.add(order)
    await db.flush()
    return order


async def make_work_session(
    db: AsyncSession,
    *,
    seeker_id: str = "seeker-1",
    provider_id: str = "provider-1",
    state: str = "waiting",
    **fields: Any,
) -> WorkSession:
    order = await make_work_order(db, seeker_id=seeker_id, status="accepted")
    session = WorkSession(
        session_id=uuid.uuid4(),
        work_order_id=order.id,
        seeker_id=seeker_id,
        provider_id=provider_id,
        connection_state=state,
        **fields,
    )
    db.add(session)
    await db.flush()
    return session


async def make_chat_message(
    db: AsyncSession,
    *,
    session: WorkSession,
    sender_type: str = "seeker",
    text: str = "hello",
    expires_at: datetime | None = None,
    client_msg_id: str | None = None,
    created_at: datetime | None = None,
    status: str = "sent",
    delivered_at: datetime | None = None,
    read_at: datetime | None = None,
) -> ChatMessage:
    sender_id = session.seeker_id if sender_type == "seeker" else session.provider_id
    message = ChatMessage(
        session_id=session.id,
        sender_id=sender_id,
        sender_type=sender_type,
        message_text=text,
        expires_at=expires_at,
        client_msg_id=client_msg_id,
        delivery_status=status,
        delivered_at=delivered_at,
        read_at=read_at,
    )
    if created_at is not None:  # several messages may share one instant on purpose
        message.created_at = message.updated_at = created_at
    db.add(message)
    await db.flush()
    return message
