"""SQL for work sessions and their event log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import SessionEvent, WorkSession
from worksession.sessions.states import ENDED_STATES


async def delete_events_of_sessions_ended_before(db: AsyncSession, cutoff: datetime) -> int:
    ended_long_ago = select(WorkSession.id).where(
        WorkSession.connection_state.in_([s.value for s in ENDED_STATES]),
        func.coalesce(WorkSession.cancelled_at, WorkSession.completed_at) <= cutoff,
    )
    result = await db.execute(
        delete(SessionEvent).where(SessionEvent.session_id.in_(ended_long_ago))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
