"""Reads of ``chat_messages`` (the pipeline's store writes them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import ChatMessage


async def history_page(
    db: AsyncSession,
    *,
    session_pk: int,
    before: tuple[datetime, int] | None,
    now: datetime,
    limit: int,
) -> list[ChatMessage]:
    """Up to ``limit`` unexpired messages of the session, newest first by ``(created_at, id)``,
    strictly older than ``before`` (a ``(created_at, id)`` pair) when given.

    ``(created_at, id) < (:c, :i)`` is spelled out with OR rather than as a row value so
    that it reads the same on every backend; the extra ``created_at <= :c`` is implied by
    it but gives the planner a range bound on the ``(session_id, created_at, id)`` index, so
    a deep page starts its backward scan at the cursor instead of filtering its way there.
    """
    query = select(ChatMessage).where(
        ChatMessage.session_id == session_pk,
        or_(ChatMessage.expires_at.is_(None), ChatMessage.expires_at > now),
    )
    if before is not None:
        created_at, message_pk = before
        query = query.where(
            ChatMessage.created_at <= created_at,
            or_(
                ChatMessage.created_at < created_at,
                and_(ChatMessage.created_at == created_at, ChatMessage.id < message_pk),
            ),
        )
    query = query.order_by(ChatMessage.created_at.desc(), ChatMessage.id.desc()).limit(limit)
    return list((await db.execute(query)).scalars())
