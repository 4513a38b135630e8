"""Reads of ``work_sessions`` (the pipeline's store writes them)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import WorkSession
from worksession.models.work_session import LIVE_STATES_SQL
from worksession.pipeline.rows import SESSION_COLUMNS, SessionRow, from_record
from worksession.sessions.location import LivePositions
from worksession.sessions.states import LIVE_STATES


async def live_session_of(db: AsyncSession, *, user_id: str, role: str) -> WorkSession | None:
    participant = WorkSession.participant(role)
    query = select(WorkSession).where(
        participant == user_id,
        WorkSession.connection_state.in_([s.value for s in LIVE_STATES]),
    )
    return (await db.execute(query)).scalar_one_or_none()


def abandoned_session_ids_query(*, idle_since: datetime, limit: int) -> Select[uuid.UUID]:
    """Live sessions not touched since ``idle_since``, read in the order of the partial
    index ``ix_work_sessions_live_touched`` (per state, the longest idle first), so a
    backlog is a range scan of it and never a sort of every live session."""
    return (
        select(WorkSession.session_id)
        .where(
            # The index's own predicate, as text: a partial index is only chosen for a
            # query that repeats its WHERE, which bound parameters do not (SQLite scans
            # and sorts work_sessions with ``IN (?, ?)``).
            LIVE_STATES_SQL,
            WorkSession.updated_at <= idle_since,
        )
        .order_by(WorkSession.connection_state, WorkSession.updated_at)
        .limit(limit)
    )


async def abandoned_session_ids(
    db: AsyncSession, *, idle_since: datetime, limit: int
) -> list[uuid.UUID]:
    """Candidates for :class:`~worksession.pipeline.commands.CancelAbandoned`, which judges
    each again on its locked row (a frame may arrive in between)."""
    query = abandoned_session_ids_query(idle_since=idle_since, limit=limit)
    return list((await db.scalars(query)).all())


async def live_sessions_with_positions(
    db: AsyncSession, *, after_id: int, limit: int, slices: int = 1, part: int = 0
) -> list[LivePositions]:
    """One keyset page (``id > after_id``, by id) of live sessions whose two positions are
    known, among those with ``id % slices == part``.

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
            WorkSession.id % slices == part,
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


async def session_row(db: AsyncSession, session_id: uuid.UUID) -> SessionRow | None:
    """The session as the pipeline sees it, read without a lock."""
    table = WorkSession.__table__
    query = select(table.c.id, *(table.c[c] for c in SESSION_COLUMNS)).where(
        table.c.session_id == session_id
    )
    row = (await db.execute(query)).first()
    return None if row is None else from_record(SessionRow, row)


async def live_participants(
    db: AsyncSession, session_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, str]]:
    """(seeker_id, provider_id) of each of ``session_ids`` that is still live."""
    if not session_ids:
        return {}
    query = select(WorkSession.session_id, WorkSession.seeker_id, WorkSession.provider_id).where(
        WorkSession.session_id.in_(list(session_ids)),
        WorkSession.connection_state.in_([s.value for s in LIVE_STATES]),
    )
    return {row[0]: (row[1], row[2]) for row in (await db.execute(query)).all()}


async def session_id_of_order(db: AsyncSession, work_id: int) -> uuid.UUID | None:
    query = select(WorkSession.session_id).where(WorkSession.work_order_id == work_id)
    return (await db.execute(query)).scalar_one_or_none()


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
