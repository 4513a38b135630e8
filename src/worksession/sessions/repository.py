"""SQL for work sessions and their event log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import ChatMessage, SessionEvent, TypingIndicator, WorkOrder, WorkSession
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
    participant = WorkSession.participant(role)
    query = (
        select(WorkSession)
        .where(WorkSession.session_id == session_id, participant == user_id)
        .with_for_update()
    )
    return (await db.execute(query)).scalar_one_or_none()


async def live_session_of(db: AsyncSession, *, user_id: str, role: str) -> WorkSession | None:
    participant = WorkSession.participant(role)
    query = select(WorkSession).where(
        participant == user_id,
        WorkSession.connection_state.in_([s.value for s in LIVE_STATES]),
    )
    return (await db.execute(query)).scalar_one_or_none()


async def lock_session(db: AsyncSession, *, session_id: uuid.UUID) -> WorkSession | None:
    """The session, locked for this transaction, whoever takes part in it (internal API)."""
    query = select(WorkSession).where(WorkSession.session_id == session_id).with_for_update()
    return (await db.execute(query)).scalar_one_or_none()


async def finish_work_order(db: AsyncSession, *, work_order_id: int, status: str) -> bool:
    """Move an ``accepted`` work order to ``status``; False when it was not ``accepted``."""
    result = await db.execute(
        update(WorkOrder)
        .where(WorkOrder.id == work_order_id, WorkOrder.status == "accepted")
        .values(status=status)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def expire_messages_of_session(
    db: AsyncSession, *, session_pk: int, expires_at: datetime
) -> int:
    result = await db.execute(
        update(ChatMessage)
        .where(ChatMessage.session_id == session_pk)
        .values(expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def stop_typing_in_session(db: AsyncSession, *, session_pk: int) -> int:
    result = await db.execute(
        update(TypingIndicator)
        .where(TypingIndicator.session_id == session_pk, TypingIndicator.is_typing.is_(True))
        .values(is_typing=False)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class LivePositions(NamedTuple):
    id: int
    session_id: uuid.UUID
    seeker_id: str
    provider_id: str
    seeker_latitude: float
    seeker_longitude: float
    provider_latitude: float
    provider_longitude: float


async def live_sessions_with_positions(
    db: AsyncSession, *, after_id: int, limit: int
) -> list[LivePositions]:
    """One keyset page (``id > after_id``, by id) of live sessions whose two positions are known.

    Only the columns the distance ticker needs are read, so a page of hundreds of sessions
    is one narrow index-ordered scan, not hundreds of ORM objects.
    """
    query = (
        select(
            WorkSession.id,
            WorkSession.session_id,
            WorkSession.seeker_id,
            WorkSession.provider_id,
            WorkSession.seeker_latitude,
            WorkSession.seeker_longitude,
            WorkSession.provider_latitude,
            WorkSession.provider_longitude,
        )
        .where(
            WorkSession.id > after_id,
            WorkSession.connection_state.in_([s.value for s in LIVE_STATES]),
            WorkSession.seeker_latitude.is_not(None),
            WorkSession.seeker_longitude.is_not(None),
            WorkSession.provider_latitude.is_not(None),
            WorkSession.provider_longitude.is_not(None),
        )
        .order_by(WorkSession.id)
        .limit(limit)
    )
    return [LivePositions._make(row) for row in (await db.execute(query)).all()]


async def session_for(
    db: AsyncSession, *, session_id: uuid.UUID, user_id: str, role: str
) -> WorkSession | None:
    """The session if ``user_id`` takes part in it as ``role``; read only, no lock."""
    participant = WorkSession.participant(role)
    query = select(WorkSession).where(WorkSession.session_id == session_id, participant == user_id)
    return (await db.execute(query)).scalar_one_or_none()


# --- internal lookup (REST) ----------------------------------------------------------


async def session_by_id(db: AsyncSession, *, session_id: uuid.UUID) -> WorkSession | None:
    """The session, whoever takes part in it; read only, no lock (internal API)."""
    query = select(WorkSession).where(WorkSession.session_id == session_id)
    return (await db.execute(query)).scalar_one_or_none()


async def find_sessions(
    db: AsyncSession,
    *,
    user_id: str | None,
    state: str | None,
    before_id: int | None,
    limit: int,
) -> list[WorkSession]:
    """Up to ``limit`` sessions, newest first by id, with ``user_id`` in either role and in
    ``state`` when given, and ``id < before_id`` (the keyset page boundary) when given."""
    query = select(WorkSession)
    if user_id is not None:
        query = query.where(
            or_(WorkSession.seeker_id == user_id, WorkSession.provider_id == user_id)
        )
    if state is not None:
        query = query.where(WorkSession.connection_state == state)
    if before_id is not None:
        query = query.where(WorkSession.id < before_id)
    query = query.order_by(WorkSession.id.desc()).limit(limit)
    return list((await db.execute(query)).scalars())
