from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from tests.factories import make_chat_message, make_work_session
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.models import ChatMessage, SessionEvent, TypingIndicator
from worksession.sessions.retention import sweep_expired


async def _count(db: Database, model: type[object]) -> int:
    async with db.transaction() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_sweep_deletes_only_what_expired(db: Database) -> None:
    now = utcnow()
    async with db.transaction() as s:
        old = await make_work_session(
            s,
            seeker_id="s1",
            provider_id="p1",
            state="cancelled",
            cancelled_at=now - timedelta(hours=25),
        )
        recent = await make_work_session(
            s,
            seeker_id="s2",
            provider_id="p2",
            state="completed",
            completed_at=now - timedelta(hours=1),
        )
        live = await make_work_session(s, seeker_id="s3", provider_id="p3", state="active")
        await make_chat_message(s, session=old, expires_at=now - timedelta(hours=1))
        await make_chat_message(s, session=recent, expires_at=now + timedelta(hours=23))
        await make_chat_message(s, session=live)  # live sessions' messages never expire
        for session in (old, recent, live):
            s.add(SessionEvent(session_id=session.id, seq=1, kind="work_accepted", data={}))
        s.add(
            TypingIndicator(
                session_id=live.id,
                user_id="s3",
                user_type="seeker",
                last_typing_at=now - timedelta(hours=2),
            )
        )
        s.add(
            TypingIndicator(
                session_id=live.id,
                user_id="p3",
                user_type="provider",
                last_typing_at=now - timedelta(seconds=5),
            )
        )

    async with db.transaction() as s:
        result = await sweep_expired(s, retention_hours=24, now=now)

    assert (result.messages, result.typing_indicators, result.events) == (1, 1, 1)
    assert await _count(db, ChatMessage) == 2
    assert await _count(db, SessionEvent) == 2
    assert await _count(db, TypingIndicator) == 1

    async with db.transaction() as s:
        again = await sweep_expired(s, retention_hours=24, now=now)
    assert (again.messages, again.typing_indicators, again.events) == (0, 0, 0)
