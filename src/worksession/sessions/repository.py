"""SQL for work sessions and their event log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import SessionEvent, WorkSession
from worksession.sessions.states import ENDED_STATES, LIVE_STATES


async def delete_events_of_sessions_ended_before(db: AsyncSession, cutoff: datetime) -> int:
    ended_long_ago = select(WorkSession.id).where(
        WorkSession.connection_state.in_([s.value for s in ENDED_STATES]),
        func.coalesce(WorkSession.cancelled_at, WorkSession.completed_at) <= cutoff,
    )
    result = await db.execute(
        delete(SessionEvent).where(SessionEvent.session_id.in_(ended_long_ago))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class EventRow(NamedTuple):
    session_pk: int
    seq: int
    kind: str
    data: dict[str, Any]
    created_at: datetime


async def bump_last_seq(db: AsyncSession, session_pk: int, count: int) -> int:
    """Reserve ``count`` seq numbers; returns the last one. Locks the session row."""
    result = await db.execute(
        update(WorkSession)
        .where(WorkSession.id == session_pk)
        .values(last_seq=WorkSession.last_seq + count)
        .returning(WorkSession.last_seq)
    )
    return int(result.scalar_one())


async def insert_events(db: AsyncSession, rows: list[EventRow]) -> None:
    await db.execute(
        insert(SessionEvent),
        [
            {
                "session_id": r.session_pk,
                "seq": r.seq,
                "kind": r.kind,
                "data": r.data,
                "created_at": r.created_at,
            }
            for r in rows
        ],
    )


async def events_after(
    db: AsyncSession, *, session_id: uuid.UUID, after_seq: int, before_seq: int | None
) -> list[SessionEvent]:
    query = (
        select(SessionEvent)
        .join(WorkSession, WorkSession.id == SessionEvent.session_id)
        .where(WorkSession.session_id == session_id, SessionEvent.seq > after_seq)
        .order_by(SessionEvent.seq)
    )
    if before_seq is not None:
        query = query.where(SessionEvent.seq < before_seq)
    return list((await db.execute(query)).scalars())


async def lock_session_for(
    db: AsyncSession, *, session_id: uuid.UUID, user_id: str, role: str
) -> WorkSession | None:
    """The session, locked for this transaction, if ``user_id`` takes part in it as ``role``.

    ``FOR UPDATE`` serialises every writer of one session (a cancel racing a complete, two
    receipts, seq allocation) on PostgreSQL; SQLite ignores it, and the embedded mode
    serialises transactions anyway.
    """
    participant = WorkSession.seeker_id if role == "seeker" else WorkSession.provider_id
    query = (
        select(WorkSession)
        .where(WorkSession.session_id == session_id, participant == user_id)
        .with_for_update()
    )
    return (await db.execute(query)).scalar_one_or_none()


async def live_session_of(db: AsyncSession, *, user_id: str, role: str) -> WorkSession | None:
    participant = WorkSession.seeker_id if role == "seeker" else WorkSession.provider_id
    query = select(WorkSession).where(
        participant == user_id,
        WorkSession.connection_state.in_([s.value for s in LIVE_STATES]),
    )
    return (await db.execute(query)).scalar_one_or_none()
