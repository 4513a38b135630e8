from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from tests.factories import make_chat_message, make_work_session
from tests.pipeline_run import policy, run
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.models import ChatMessage, SessionEvent
from worksession.pipeline.commands import SweepExpired


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

    outcome, _ = await run(db, SweepExpired(), now=now, rules=policy(retention_hours=24))

    [result] = outcome.swept
    assert (result.messages, result.events) == (1, 1)
    assert await _count(db, ChatMessage) == 2
    assert await _count(db, SessionEvent) == 2

    again, _ = await run(db, SweepExpired(), now=now, rules=policy(retention_hours=24))
    [result] = again.swept
    assert (result.messages, result.events) == (0, 0)
