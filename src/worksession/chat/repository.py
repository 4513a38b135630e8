"""SQL for chat messages and typing indicators."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import ChatMessage, TypingIndicator


async def delete_expired_messages(db: AsyncSession, *, now: datetime) -> int:
    result = await db.execute(delete(ChatMessage).where(ChatMessage.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_typing_idle_since(db: AsyncSession, cutoff: datetime) -> int:
    result = await db.execute(
        delete(TypingIndicator).where(TypingIndicator.last_typing_at <= cutoff)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
