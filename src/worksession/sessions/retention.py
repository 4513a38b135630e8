"""Deleting what has outlived its retention: chat, typing state and session history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from worksession.chat import repository as chat_repository
from worksession.kit.clock import utcnow
from worksession.sessions import repository as session_repository

TYPING_INDICATOR_MAX_AGE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SweepResult:
    messages: int
    typing_indicators: int
    events: int


async def sweep_expired(
    db: AsyncSession, *, retention_hours: float, now: datetime | None = None
) -> SweepResult:
    """Delete expired chat messages, typing rows idle for an hour, and the event log of
    sessions that ended more than ``retention_hours`` ago (it holds the chat text too)."""
    now = now or utcnow()
    messages = await chat_repository.delete_expired_messages(db, now=now)
    typing = await chat_repository.delete_typing_idle_since(db, now - TYPING_INDICATOR_MAX_AGE)
    events = await session_repository.delete_events_of_sessions_ended_before(
        db, now - timedelta(hours=retention_hours)
    )
    return SweepResult(messages=messages, typing_indicators=typing, events=events)
