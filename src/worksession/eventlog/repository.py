"""Reads of ``session_events``: what a socket replays (``resume``) or fills a gap with.
The pipeline's store writes the log."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.eventlog.events import LoggedEvent
from worksession.models import SessionEvent, WorkSession


async def read_after(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    after_seq: int,
    before_seq: int | None = None,
    limit: int,
) -> list[LoggedEvent]:
    """The first ``limit`` events with ``after_seq < seq < before_seq`` (or to the end), in
    order: one page. A long session is read page by page, never whole (a replay from 0 of
    thousands of events, twenty at once, held tens of megabytes)."""
    query = (
        select(SessionEvent.seq, SessionEvent.kind, SessionEvent.data, SessionEvent.created_at)
        .join(WorkSession, WorkSession.id == SessionEvent.session_id)
        .where(WorkSession.session_id == session_id, SessionEvent.seq > after_seq)
        .order_by(SessionEvent.seq)
        .limit(limit)
    )
    if before_seq is not None:
        query = query.where(SessionEvent.seq < before_seq)
    return [
        LoggedEvent(session_id=session_id, seq=seq, kind=kind, data=data, created_at=created_at)
        for seq, kind, data, created_at in (await db.execute(query)).all()
    ]
